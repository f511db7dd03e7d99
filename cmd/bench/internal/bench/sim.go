package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	arc "github.com/hashicorp/golang-lru/arc/v2"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/maypok86/otter/v2"

	"github.com/thermoscache/thermos/cmd/bench/internal/trace"
	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tracking"
)

// simPolicies are the simulated peers' policies, in table order.
func simPolicies() []string { return []string{PolicyLRU, Policy2Q, PolicyARC, PolicyOtter} }

// sim is a single-threaded hit-ratio replay of one cache at one size:
// access looks key up and fills it on a miss (demand fill). The simulated
// peers are golang-lru's and otter's caches keyed by the integer; thermos
// replays go through a real tiered.Cache (newThermosSim).
type sim struct {
	name   string // column name: a peer policy, or "thermos <policy>[ +disk]"
	size   int
	access func(k uint64) (bool, error)
	close  func() error
	held   func() int // entries held now; nil for the simulations
	// heldAtEnd is held() just before close.
	heldAtEnd int
	hits      int64
	n         int64
	err       error
	elapsed   time.Duration // time spent in access, replay time of this cache alone
}

func (s *sim) ratio() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.hits) / float64(s.n)
}

// run replays keys through s, stopping at the first error.
func (s *sim) run(keys []uint64) {
	if s.err != nil {
		return
	}
	t0 := time.Now()
	for _, k := range keys {
		hit, err := s.access(k)
		if err != nil {
			s.err = err
			break
		}
		s.n++
		if hit {
			s.hits++
		}
	}
	s.elapsed += time.Since(t0)
}

func newSim(policy string, size int) (*sim, error) {
	s := &sim{name: policy, size: size, close: func() error { return nil }}
	var err error
	switch policy {
	case PolicyLRU:
		// golang-lru's LRU without the lock lru.Cache adds: same policy.
		var c *simplelru.LRU[uint64, struct{}]
		if c, err = simplelru.NewLRU[uint64, struct{}](size, nil); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case Policy2Q:
		var c *lru.TwoQueueCache[uint64, struct{}]
		if c, err = lru.New2Q[uint64, struct{}](size); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case PolicyARC:
		var c *arc.ARCCache[uint64, struct{}]
		if c, err = arc.NewARC[uint64, struct{}](size); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case PolicyOtter:
		var c *otter.Cache[uint64, struct{}]
		if c, err = otter.New(&otter.Options[uint64, struct{}]{MaximumSize: size}); err == nil {
			s.access = demandFill(c.GetIfPresent, func(k uint64) { c.Set(k, struct{}{}) })
			s.close = func() error { c.StopAllGoroutines(); return nil }
		}
	default:
		return nil, errUnknownPolicy(policy)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Replays through tiered.Cache use keys of one length and values of one
// length, so the memory budget holds exactly the entries it is sized for.
const (
	replayPrefix   = "r:"
	replayKeyLen   = len(replayPrefix) + 16 // the key as 16 hex digits
	replayValueLen = 16
	// replayTTL outlasts any replay: entries leave by eviction only (the
	// memory tier also caps an entry's life at tracking.DefaultMaxTTL).
	replayTTL = 24 * time.Hour
)

// replayBudget is the memory budget of a replay at size entries: what the
// memory tier charges an entry (tracking.EntryOverhead plus key and value
// bytes) times size.
func replayBudget(size int) int64 {
	return int64(size) * (tracking.EntryOverhead + int64(replayKeyLen) + int64(replayValueLen))
}

// thermosSimName names a replay through tiered.Cache in tables.
func thermosSimName(pol tracking.Policy, disk bool) string {
	if disk {
		return "thermos " + pol.String() + "+disk"
	}
	return "thermos " + pol.String()
}

// newThermosSim returns a replay through a real tiered.Cache: one route
// whose memory tier, of policy pol, has the budget of size entries, with
// demand fill as the simulations do it: Get, and Set on a miss (GetOrLoad
// would fill the same way, at several times the cost of a miss: its
// single-flight). With disk the route is Memory|Disk over a temporary
// directory with no disk budget, so the disk holds every key the replay
// fills.
func newThermosSim(ctx context.Context, pol tracking.Policy, size int, disk bool, logger *slog.Logger) (*sim, error) {
	tiers := tiered.Memory
	if disk {
		tiers |= tiered.Disk
	}
	opts := &tiered.Options{
		Routes:       []tiered.Route{{Prefix: replayPrefix, Tiers: tiers, TTL: replayTTL, Beta: -1}},
		MemoryBytes:  replayBudget(size),
		MemoryPolicy: pol,
		Logger:       logger,
	}
	var dir string
	if disk {
		d, err := os.MkdirTemp("", "thermos-bench-replay-*")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		opts.Dir, dir = d, d
	}
	c, err := tiered.Open(ctx, opts)
	if err != nil {
		if dir != "" {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("bench: open a %s replay: %w", thermosSimName(pol, disk), err)
	}
	value := make([]byte, replayValueLen)
	buf := make([]byte, replayKeyLen)
	copy(buf, replayPrefix)
	s := &sim{name: thermosSimName(pol, disk), size: size}
	s.access = func(k uint64) (bool, error) {
		for i := replayKeyLen - 1; i >= len(replayPrefix); i-- { // fixed-width hex
			buf[i] = "0123456789abcdef"[k&15]
			k >>= 4
		}
		key := string(buf)
		_, ok, err := c.Get(ctx, key)
		if err != nil || ok {
			return ok, err
		}
		return false, c.Set(ctx, key, value, 0)
	}
	s.held = func() int { return c.Stats().MemoryEntries }
	s.close = func() error {
		err := c.Close()
		if dir != "" {
			err = errors.Join(err, os.RemoveAll(dir))
		}
		return err
	}
	return s, nil
}

// demandFill is one access of a read-through cache: a hit, or a miss that
// fills the key.
func demandFill(get func(uint64) (struct{}, bool), add func(uint64)) func(uint64) (bool, error) {
	return func(k uint64) (bool, error) {
		if _, ok := get(k); ok {
			return true, nil
		}
		add(k)
		return false, nil
	}
}

func errUnknownPolicy(p string) error {
	_, _, err := newLocal(p, 1)
	return err
}

// chunkSize is how many accesses feed hands each sim at a time: one sim
// works through a whole chunk while its cache is hot in the CPU's caches,
// instead of all sims stepping in lockstep and evicting each other.
const chunkSize = 1 << 16

// feed drives every sim over the accesses that next supplies, chunk by
// chunk, spreading the sims over GOMAXPROCS goroutines, and returns the
// first sim's error. next fills buf and returns how many keys it wrote, or
// io.EOF when there are no more. tick, if set, is called after each chunk
// with the accesses fed so far.
func feed(ctx context.Context, sims []*sim, next func(buf []uint64) (int, error), tick func(n int64)) error {
	workers := min(runtime.GOMAXPROCS(0), len(sims))
	buf := make([]uint64, chunkSize)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := next(buf)
		if n > 0 {
			chunk := buf[:n]
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := w; i < len(sims); i += workers {
						sims[i].run(chunk)
					}
				})
			}
			wg.Wait()
			total += int64(n)
			if tick != nil {
				tick(total)
			}
			for _, s := range sims {
				if s.err != nil {
					return fmt.Errorf("bench: %s at %d entries: %w", s.name, s.size, s.err)
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sliceSource returns a feed source over keys.
func sliceSource(keys []uint64) func([]uint64) (int, error) {
	return func(buf []uint64) (int, error) {
		n := copy(buf, keys)
		keys = keys[n:]
		if len(keys) == 0 {
			return n, io.EOF
		}
		return n, nil
	}
}

// replayTrace streams one trace through every sim, at most limit accesses
// (0: all), and returns how many accesses it replayed.
func replayTrace(ctx context.Context, path string, f trace.Format, limit int64, sims []*sim, tick func(n int64)) (int64, error) {
	r, err := trace.Open(path, f)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var total int64
	err = feed(ctx, sims, func(buf []uint64) (int, error) {
		if limit > 0 {
			buf = buf[:min(int64(len(buf)), limit-total)]
		}
		n := 0
		for n < len(buf) {
			k, err := r.Next()
			if err != nil {
				total += int64(n)
				return n, err
			}
			buf[n] = k
			n++
		}
		total += int64(n)
		if limit > 0 && total >= limit {
			return n, io.EOF
		}
		return n, nil
	}, tick)
	return total, err
}
