package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	arc "github.com/hashicorp/golang-lru/arc/v2"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"
	"github.com/redis/rueidis"
)

// Target is a cache under test, read through to its backend on a miss.
//
// thermos's layouts (memory-only, memory+Redis, memory+disk+Redis) are
// Targets over tiered.Cache; they also implement TierStatser, which gives
// their hit ratio and the share of reads each tier answered.
type Target interface {
	// Name identifies the target in tables and benchmark lines.
	Name() string
	// Get returns key's value, reading through to the backend on a local
	// miss. hit reports whether the local cache answered; a nil value with
	// a nil error means the backend has no such key.
	Get(ctx context.Context, key string) (v []byte, hit bool, err error)
	// Set writes v to the backend and the local cache.
	Set(ctx context.Context, key string, v []byte) error
	// Close releases the target's clients and goroutines.
	Close() error
}

// Backend is the source of truth behind a local cache: an in-process
// origin or Redis.
type Backend interface {
	// Get returns key's value, or ok == false if there is none.
	Get(ctx context.Context, key string) (v []byte, ok bool, err error)
	// Set stores v under key.
	Set(ctx context.Context, key string, v []byte) error
}

// targetSpec names a Target and how to build it.
type targetSpec struct {
	name        string
	consistency string // how the local tier hears of writes elsewhere
	needsRedis  bool
	build       func(size int) (Target, error)
}

// keyName returns the Redis key of key index i.
func keyName(i uint64) string { return "bench:k:" + strconv.FormatUint(i, 10) }

// keyNames returns the keys of indexes 0..n-1, built once so the measured
// loops do not allocate them.
func keyNames(n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = keyName(uint64(i))
	}
	return k
}

// valueFor returns a deterministic value of size bytes for key.
func valueFor(key string, size int) []byte {
	v := make([]byte, size)
	copy(v, key)
	for i := len(key); i < size; i++ {
		v[i] = byte('a' + i%26)
	}
	return v
}

// origin is an in-process backend: every key exists, its value is
// valueFor(key), optionally after a fixed delay (a slow database).
type origin struct {
	size  int
	delay time.Duration
	loads atomic.Int64
}

func (o *origin) Get(ctx context.Context, key string) ([]byte, bool, error) {
	o.loads.Add(1)
	if o.delay > 0 {
		t := time.NewTimer(o.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	return valueFor(key, o.size), true, nil
}

func (o *origin) Set(context.Context, string, []byte) error { return nil }

// redisBackend reads and writes Redis without any client-side cache.
type redisBackend struct {
	c rueidis.Client
}

func (r *redisBackend) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := r.c.Do(ctx, r.c.B().Get().Key(key).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	return v, err == nil, err
}

func (r *redisBackend) Set(ctx context.Context, key string, v []byte) error {
	return r.c.Do(ctx, r.c.B().Set().Key(key).Value(rueidis.BinaryString(v)).Build()).Error()
}

// local is an in-process cache keyed by string.
type local interface {
	get(key string) ([]byte, bool)
	add(key string, v []byte)
}

// readThrough is a local cache in front of a Backend, with no consistency
// between instances: what golang-lru or otter give you on their own.
type readThrough struct {
	name    string
	l       local
	b       Backend
	closeFn func() error
}

func (r *readThrough) Name() string { return r.name }

func (r *readThrough) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if v, ok := r.l.get(key); ok {
		return v, true, nil
	}
	v, ok, err := r.b.Get(ctx, key)
	if err != nil || !ok {
		return nil, false, err
	}
	r.l.add(key, v)
	return v, false, nil
}

func (r *readThrough) Set(ctx context.Context, key string, v []byte) error {
	if err := r.b.Set(ctx, key, v); err != nil {
		return err
	}
	r.l.add(key, v)
	return nil
}

func (r *readThrough) Close() error {
	if r.closeFn != nil {
		return r.closeFn()
	}
	return nil
}

type lruLocal struct{ c *lru.Cache[string, []byte] }

func (l lruLocal) get(k string) ([]byte, bool) { return l.c.Get(k) }
func (l lruLocal) add(k string, v []byte)      { l.c.Add(k, v) }

type twoQLocal struct {
	c *lru.TwoQueueCache[string, []byte]
}

func (l twoQLocal) get(k string) ([]byte, bool) { return l.c.Get(k) }
func (l twoQLocal) add(k string, v []byte)      { l.c.Add(k, v) }

type arcLocal struct{ c *arc.ARCCache[string, []byte] }

func (l arcLocal) get(k string) ([]byte, bool) { return l.c.Get(k) }
func (l arcLocal) add(k string, v []byte)      { l.c.Add(k, v) }

type otterLocal struct{ c *otter.Cache[string, []byte] }

func (l otterLocal) get(k string) ([]byte, bool) { return l.c.GetIfPresent(k) }
func (l otterLocal) add(k string, v []byte)      { l.c.Set(k, v) }

// Local cache policies offered by newLocal.
const (
	PolicyLRU   = "lru"
	Policy2Q    = "2q"
	PolicyARC   = "arc"
	PolicyOtter = "otter"
)

// newLocal returns an entry-bounded local cache of policy p.
func newLocal(p string, size int) (local, func() error, error) {
	switch p {
	case PolicyLRU:
		c, err := lru.New[string, []byte](size)
		return lruLocal{c}, nil, err
	case Policy2Q:
		c, err := lru.New2Q[string, []byte](size)
		return twoQLocal{c}, nil, err
	case PolicyARC:
		c, err := arc.NewARC[string, []byte](size)
		return arcLocal{c}, nil, err
	case PolicyOtter:
		c, err := otter.New(&otter.Options[string, []byte]{MaximumSize: size})
		if err != nil {
			return nil, nil, err
		}
		return otterLocal{c}, func() error { c.StopAllGoroutines(); return nil }, nil
	}
	return nil, nil, fmt.Errorf("%w: unknown policy %q", ErrConfig, p)
}

// rueidisTarget is rueidis's own client-side cache: DoCache with server
// assisted tracking, in the default (OPTIN) or BCAST mode.
type rueidisTarget struct {
	name string
	c    rueidis.Client
	ttl  time.Duration
}

// Client-side cache TTL for DoCache: long, so only invalidations and
// eviction end an entry.
const doCacheTTL = time.Hour

// approxEntryBytes estimates rueidis's per-entry cost (key, value, its
// message struct and map overhead) to turn an entry budget into the byte
// budget rueidis is configured with.
const approxEntryBytes = 160

// newRueidisTarget returns a DoCache client with room for about size
// entries per connection. singleConn limits it to one connection instead of
// rueidis's default of up to four.
func newRueidisTarget(name string, conn *redisConn, bcast, singleConn bool, size, valueSize int, onInv func([]rueidis.RedisMessage)) (*rueidisTarget, error) {
	opt := rueidis.ClientOption{
		CacheSizeEachConn: size * (valueSize + approxEntryBytes),
		OnInvalidations:   onInv,
	}
	if singleConn {
		opt.PipelineMultiplex = -1
	}
	if bcast {
		opt.ClientTrackingOptions = []string{"PREFIX", "bench:", "BCAST"}
	}
	c, err := conn.client(opt)
	if err != nil {
		return nil, err
	}
	return &rueidisTarget{name: name, c: c, ttl: doCacheTTL}, nil
}

func (r *rueidisTarget) Name() string { return r.name }

func (r *rueidisTarget) Get(ctx context.Context, key string) ([]byte, bool, error) {
	res := r.c.DoCache(ctx, r.c.B().Get().Key(key).Cache(), r.ttl)
	v, err := res.AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, res.IsCacheHit(), nil
	}
	return v, res.IsCacheHit(), err
}

func (r *rueidisTarget) Set(ctx context.Context, key string, v []byte) error {
	return r.c.Do(ctx, r.c.B().Set().Key(key).Value(rueidis.BinaryString(v)).Build()).Error()
}

func (r *rueidisTarget) Close() error { r.c.Close(); return nil }

// redisNoCache is a client option without client-side caching (no CLIENT
// TRACKING at all).
func redisNoCache() rueidis.ClientOption { return rueidis.ClientOption{DisableCache: true} }
