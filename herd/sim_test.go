package herd

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type strategy int

const (
	plainExpiry strategy = iota // every request that finds the value expired loads
	xfetchAlone                 // every request that XFetch picks loads
	xfetchLock                  // XFetch picks, the lease lets one load
)

// simulate runs a hot key in virtual time: a request every 1/rate, a
// rebuild of delta, a value living ttl. It returns origin calls per refresh
// over the given number of refreshes.
func simulate(s strategy, rate float64, delta, ttl time.Duration, refreshes int, rng *rand.Rand) float64 {
	step := time.Duration(float64(time.Second) / rate)
	var now time.Duration
	expiry := ttl
	pending := time.Duration(-1) // completion of the first load in flight
	loads, done := 0, 0
	for done < refreshes {
		now += step
		if pending >= 0 && now >= pending {
			expiry, pending = pending+ttl, -1
			done++
		}
		var start bool
		switch s {
		case plainExpiry:
			start = now >= expiry
		case xfetchAlone:
			start = ShouldRefresh(time.Unix(0, int64(now)), time.Unix(0, int64(expiry)), delta, 1, 1-rng.Float64())
		case xfetchLock:
			start = pending < 0 && ShouldRefresh(time.Unix(0, int64(now)), time.Unix(0, int64(expiry)), delta, 1, 1-rng.Float64())
		}
		if start {
			loads++
			if pending < 0 {
				pending = now + delta
			}
		}
	}
	return float64(loads) / float64(refreshes)
}

// TestXFetchSimulation reproduces the reference figures: plain expiry makes
// 1 + rate*delta calls per refresh, XFetch alone about e (2.7), XFetch with
// the lock exactly 1.
func TestXFetchSimulation(t *testing.T) {
	const rate, refreshes = 1000.0, 2000
	delta, ttl := 20*time.Millisecond, time.Second
	rd := rate * delta.Seconds()
	rng := rand.New(rand.NewPCG(7, 8))
	plain := simulate(plainExpiry, rate, delta, ttl, refreshes, rng)
	alone := simulate(xfetchAlone, rate, delta, ttl, refreshes, rng)
	locked := simulate(xfetchLock, rate, delta, ttl, refreshes, rng)
	t.Logf("rate*delta = %.0f; origin calls per refresh: plain expiry %.2f, XFetch alone %.2f, XFetch + lock %.2f", rd, plain, alone, locked)
	if math.Abs(plain-(1+rd)) > 1 {
		t.Errorf("plain expiry: %.2f calls per refresh, want 1 + rate*delta = %.0f", plain, 1+rd)
	}
	if math.Abs(alone-math.E) > 0.3 {
		t.Errorf("XFetch alone: %.2f calls per refresh, want about e = %.2f", alone, math.E)
	}
	if locked != 1 {
		t.Errorf("XFetch + lock: %.2f calls per refresh, want 1", locked)
	}
}

// hotEntry is what a process of the hot-key run holds in memory.
type hotEntry struct {
	version    int
	value      []byte
	soft, hard time.Time
	delta      time.Duration
}

// TestXFetchHotKeyWithHerd runs a hot key for real: two processes (Groups
// with their own clients) serve it from memory at rate*delta >= 10, use
// XFetch to decide on early refresh and Refresh to rebuild. Each value is
// refreshed by exactly one origin call and no request ever finds its value
// past the hard expiry (nobody blocks).
func TestXFetchHotKeyWithHerd(t *testing.T) {
	const (
		delta     = 20 * time.Millisecond
		softTTL   = 200 * time.Millisecond
		hardSlack = 2 * time.Second
		readers   = 6 // per process
		pace      = 2 * time.Millisecond
		runFor    = 2 * time.Second
	)
	f := newFleet(t, variants[0])
	groups := []*Group{f.group(Options{}), f.group(Options{})}
	mem := make([]atomic.Pointer[hotEntry], len(groups))
	publish := func(e *hotEntry) {
		for i := range mem {
			for {
				old := mem[i].Load()
				if old != nil && old.version >= e.version || mem[i].CompareAndSwap(old, e) {
					break
				}
			}
		}
	}
	now := time.Now()
	first := &hotEntry{value: []byte("v0"), soft: now.Add(softTTL), hard: now.Add(softTTL + hardSlack), delta: delta}
	if err := f.c.Do(context.Background(), f.c.B().Set().Key("hot").Value("v0").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	publish(first)

	var mu sync.Mutex
	callsPerBase := map[int]int{}
	loadFor := func(base int) LoadFunc {
		return func(ctx context.Context) ([]byte, time.Duration, error) {
			mu.Lock()
			callsPerBase[base]++
			mu.Unlock()
			time.Sleep(delta)
			now := time.Now()
			e := &hotEntry{version: base + 1, value: fmt.Appendf(nil, "v%d", base+1),
				soft: now.Add(softTTL), hard: now.Add(softTTL + hardSlack), delta: delta}
			publish(e) // what every process's invalidation and re-read would do
			return e.value, softTTL + hardSlack, nil
		}
	}
	var requests, blocked, started atomic.Int64
	var slowest atomic.Int64
	stop := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for i, g := range groups {
		for range readers {
			wg.Go(func() {
				tick := time.NewTicker(pace)
				defer tick.Stop()
				for time.Now().Before(stop) {
					<-tick.C
					begin := time.Now()
					e := mem[i].Load()
					requests.Add(1)
					if !begin.Before(e.hard) {
						blocked.Add(1)
					}
					if ShouldRefresh(time.Now(), e.soft, e.delta, 1, 1-rand.Float64()) && g.Refresh("hot", e.value, loadFor(e.version)) {
						started.Add(1)
					}
					if took := int64(time.Since(begin)); took > slowest.Load() {
						slowest.Store(took)
					}
				}
			})
		}
	}
	wg.Wait()
	for _, g := range groups {
		g.Close() // waits for refreshes in flight
	}
	rate := float64(requests.Load()) / runFor.Seconds()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for base, n := range callsPerBase {
		total += n
		if n != 1 {
			t.Errorf("value v%d was refreshed by %d origin calls, want 1", base, n)
		}
	}
	t.Logf("rate %.0f/s, rate*delta %.1f, %d refreshes, %d origin calls (%.2f per refresh), %d Refresh calls started, %d requests blocked, slowest request %v",
		rate, rate*delta.Seconds(), len(callsPerBase), total, float64(total)/float64(max(len(callsPerBase), 1)),
		started.Load(), blocked.Load(), time.Duration(slowest.Load()))
	if rate*delta.Seconds() < 10 {
		t.Errorf("rate*delta = %.1f: the run was not hot enough (want >= 10)", rate*delta.Seconds())
	}
	if len(callsPerBase) < 3 {
		t.Errorf("%d refreshes in %v, want several", len(callsPerBase), runFor)
	}
	if blocked.Load() != 0 {
		t.Errorf("%d requests found their value past the hard expiry", blocked.Load())
	}
}
