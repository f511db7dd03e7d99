package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tracking"
)

// Tier names used as keys of TierStats, in table order.
const (
	TierMemory = "memory"
	TierDisk   = "disk"
	TierRedis  = "redis"
	TierMisses = "misses"
	TierLoads  = "loads"
)

// TierStatser is an optional interface of a Target whose cache counts
// answers per tier. runTimed takes its hit ratio from the difference of two
// snapshots (memory and disk hits are local hits) instead of Get's hit
// flag, and tables print the share of each tier.
type TierStatser interface {
	// TierStats returns running totals keyed by TierMemory, TierDisk,
	// TierRedis, TierMisses and TierLoads.
	TierStats() map[string]int64
}

// Layout is a thermos tier combination measured by the tool.
type Layout struct {
	Name  string      // "thermos memory+redis"
	Tiers tiered.Tier // the route's tiers
	// Raw reads values other programs wrote without an envelope (the
	// Redis-preloaded values of the peers scenario).
	Raw bool
}

// Layouts are the thermos layouts of the hit-ratio scenario.
func Layouts() []Layout {
	return []Layout{
		{Name: "thermos memory", Tiers: tiered.Memory},
		{Name: "thermos memory+redis", Tiers: tiered.Memory | tiered.Redis},
		{Name: "thermos memory+disk+redis", Tiers: tiered.Memory | tiered.Disk | tiered.Redis},
	}
}

// thermosTarget is a tiered.Cache with one route, read through GetOrLoad
// with the in-process origin as its loader.
type thermosTarget struct {
	name string
	c    *tiered.Cache
	load tiered.Loader
	dir  string // the disk tier's temporary directory, removed by Close; "" when the caller owns it
	// valueSize is the value length the memory budget was sized for.
	valueSize int
}

// thermosSpec says how to open a thermos Target.
type thermosSpec struct {
	layout     Layout
	prefix     string        // the route's prefix: every key read starts with it
	entries    int           // memory budget, in entries of keyLen+valueSize bytes
	keyLen     int           // typical key length, for the budget
	valueSize  int           // value length, for the budget
	dir        string        // disk directory, owned by the caller; "" makes a temporary one for Disk layouts
	route      *tiered.Route // overrides the route built from layout and prefix
	unverified tiered.UnverifiedPolicy
}

// memoryBudget is the byte budget that holds entries entries of keyLen and
// valueSize bytes, as the memory tier charges them.
func memoryBudget(entries, keyLen, valueSize int) int64 {
	return int64(entries) * (tracking.EntryOverhead + int64(keyLen) + int64(valueSize))
}

// originLoader is o as a tiered.Loader.
func originLoader(o *origin) tiered.Loader {
	return tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		v, ok, err := o.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, tiered.ErrNotFound
		}
		return v, nil
	})
}

// openThermos opens a tiered.Cache for s, with load as GetOrLoad's loader.
func openThermos(ctx context.Context, e *env, s thermosSpec, load tiered.Loader) (*thermosTarget, error) {
	r := tiered.Route{Prefix: s.prefix, Tiers: s.layout.Tiers, Raw: s.layout.Raw}
	if s.route != nil {
		r = *s.route
	}
	opts := &tiered.Options{
		Routes:      []tiered.Route{r},
		MemoryBytes: memoryBudget(s.entries, s.keyLen, s.valueSize),
		Unverified:  s.unverified,
		Logger:      e.logger,
	}
	t := &thermosTarget{name: s.layout.Name, valueSize: s.valueSize}
	if r.Tiers&tiered.Redis != 0 {
		if e.redis == nil {
			return nil, fmt.Errorf("%w: %s needs Redis", ErrUnavailable, s.layout.Name)
		}
		ro := e.redis.option(rueidis.ClientOption{})
		opts.Redis = &ro
	}
	if r.Tiers&tiered.Disk != 0 {
		opts.Dir = s.dir
		if opts.Dir == "" {
			d, err := os.MkdirTemp("", "thermos-bench-*")
			if err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			opts.Dir, t.dir = d, d
		}
	}
	c, err := tiered.Open(ctx, opts)
	if err != nil {
		if t.dir != "" {
			os.RemoveAll(t.dir)
		}
		return nil, fmt.Errorf("bench: open %s: %w", s.layout.Name, err)
	}
	t.c, t.load = c, load
	return t, nil
}

func (t *thermosTarget) Name() string { return t.name }

// Get reads through GetOrLoad. Its hit flag is always false: the tiers'
// own counters (TierStats) say which tier answered, without adding work to
// the hit path.
func (t *thermosTarget) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := t.c.GetOrLoad(ctx, key, t.load)
	if err != nil || !ok {
		return nil, false, err
	}
	return v, false, nil
}

// Set writes v to every tier of key's route, for the route's TTL.
func (t *thermosTarget) Set(ctx context.Context, key string, v []byte) error {
	return t.c.Set(ctx, key, v, 0)
}

// TierStats sums the cache's route counters.
func (t *thermosTarget) TierStats() map[string]int64 {
	m := make(map[string]int64, 5)
	for _, r := range t.c.Stats().Routes {
		m[TierMemory] += r.MemoryHits
		m[TierDisk] += r.DiskHits
		m[TierRedis] += r.RedisHits
		m[TierMisses] += r.Misses
		m[TierLoads] += r.Loads
	}
	return m
}

// Close closes the cache and removes its temporary directory.
func (t *thermosTarget) Close() error {
	err := t.c.Close()
	if t.dir != "" {
		if rerr := os.RemoveAll(t.dir); err == nil {
			err = rerr
		}
	}
	return err
}

var (
	_ Target      = (*thermosTarget)(nil)
	_ TierStatser = (*thermosTarget)(nil)
)

// prefixedKeys returns prefix+i for i in 0..n-1.
func prefixedKeys(prefix string, n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = prefix + strconv.Itoa(i)
	}
	return k
}

// tierDelta returns after-before per tier.
func tierDelta(before, after map[string]int64) map[string]int64 {
	d := make(map[string]int64, len(after))
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
