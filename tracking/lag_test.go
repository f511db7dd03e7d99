package tracking

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestExternalWriterLag: keys written by a second rueidis client and by
// redis-cli stop being served by every reading cache; reports the
// invalidation lag (from the start of the writer's SET to the invalidation
// applied in a cache) against the writer's own SET round trip.
func TestExternalWriterLag(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	srv := redistest.Start(t, nil)
	w := newWriter(t, srv)
	type arrival struct {
		mu sync.Mutex
		at map[string]time.Time
	}
	caches := make([]*Cache, 2)
	arrivals := make([]*arrival, 2)
	for i := range caches {
		caches[i] = newRedisCache(t, srv, &Options{Prefixes: []string{"lag:"}})
		a := &arrival{at: map[string]time.Time{}}
		arrivals[i] = a
		caches[i].OnInvalidate(func(keys []string, _ bool) {
			now := time.Now()
			a.mu.Lock()
			for _, k := range keys {
				a.at[k] = now
			}
			a.mu.Unlock()
		})
	}
	heardAt := func(i int, key string) (time.Time, bool) {
		arrivals[i].mu.Lock()
		defer arrivals[i].mu.Unlock()
		at, ok := arrivals[i].at[key]
		return at, ok
	}
	forget := func(key string) {
		for _, a := range arrivals {
			a.mu.Lock()
			delete(a.at, key)
			a.mu.Unlock()
		}
	}
	ctx := context.Background()
	var rtts, lags []time.Duration
	for i := range n {
		key := fmt.Sprint("lag:", i)
		set(t, w, key, "v1")
		for _, c := range caches {
			fetchCached(t, c, key)
		}
		forget(key)
		start := time.Now()
		if err := w.Do(ctx, w.B().Set().Key(key).Value("v2").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
		for ci, c := range caches {
			waitFor(t, "invalidation of "+key, 5*time.Second, func() bool {
				_, ok := heardAt(ci, key)
				return ok
			})
			if it, fresh, ok := c.Get(key); ok && fresh && string(it.Value) == "v1" {
				t.Fatalf("cache %d still serves %s = v1 after its invalidation", ci, key)
			}
			at, _ := heardAt(ci, key)
			lags = append(lags, at.Sub(start))
		}
	}
	for i := range 5 {
		key := fmt.Sprint("lag:cli:", i)
		srv.CLI("SET", key, "v1")
		for _, c := range caches {
			fetchCached(t, c, key)
		}
		srv.CLI("SET", key, "v2")
		for _, c := range caches {
			waitFor(t, "redis-cli invalidation of "+key, 5*time.Second, func() bool {
				it, fresh, ok := c.Get(key)
				return !(ok && fresh && string(it.Value) == "v1")
			})
		}
	}
	q := func(d []time.Duration, p float64) time.Duration {
		slices.Sort(d)
		return d[int(p*float64(len(d)-1))]
	}
	rp50, rp99 := q(rtts, 0.5), q(rtts, 0.99)
	lp50, lp99 := q(lags, 0.5), q(lags, 0.99)
	t.Logf("writer SET round trip: p50 %v p99 %v; invalidation lag over %d samples: p50 %v (%.2fx) p99 %v (%.2fx); targets p50 <= 1.2x, p99 <= 2x",
		rp50, rp99, len(lags), lp50, float64(lp50)/float64(rp50), lp99, float64(lp99)/float64(rp99))
	// The targets are met on a quiet machine; on a loaded one p50 reaches
	// 1.2x now and then. Asserted with room for the load, but not for an
	// invalidation that waits on anything (a batch, a lock, a round trip):
	// that costs at least another round trip or a millisecond.
	if limit := 2*rp50 + time.Millisecond; lp50 > limit {
		t.Errorf("invalidation lag p50 %v > %v (2x the writer's round trip + 1ms)", lp50, limit)
	}
	if limit := 4*rp99 + 10*time.Millisecond; lp99 > limit {
		t.Errorf("invalidation lag p99 %v > %v (4x the writer's round trip + 10ms)", lp99, limit)
	}
}
