package tiered

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
)

// Near its soft expiry a hot value is refreshed early, once, in the
// background, while every caller keeps getting the current value at once;
// far from expiry nothing is refreshed.
func TestEarlyRefresh(t *testing.T) {
	for _, tiers := range []Tier{Memory, Memory | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			clk := clock.NewManual(time.Unix(1_700_000_000, 0))
			o := &Options{Clock: clk, Rand: rand.NewPCG(7, 7), Logger: quietLog,
				Routes: []Route{{Tiers: tiers, TTL: time.Minute, Beta: 1000}}}
			if tiers&Redis != 0 {
				o.Redis = redisOpts(redistest.Start(t, nil))
			}
			c := openT(t, o)
			ctx := context.Background()
			l := &countingLoader{delay: 2 * time.Millisecond} // δ ≈ 2ms; δ·β ≈ 2s
			if v, _, err := c.GetOrLoad(ctx, "hot", l); err != nil || string(v) != "v:hot:1" {
				t.Fatalf("first load = %q, %v", v, err)
			}
			// 59s left: -ln(u)·2s would need u < e^-29; the PCG seed draws none.
			clk.Advance(time.Second)
			for range 100 {
				if _, _, err := c.GetOrLoad(ctx, "hot", l); err != nil {
					t.Fatal(err)
				}
			}
			if n := l.calls.Load(); n != 1 {
				t.Fatalf("%d loads far from expiry, want 1", n)
			}
			// 10ms left: almost every draw says refresh; the herd lets one run.
			clk.Advance(time.Minute - time.Second - 10*time.Millisecond)
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					start := time.Now()
					v, ok, err := c.GetOrLoad(ctx, "hot", l)
					if err != nil || !ok || len(v) == 0 {
						t.Errorf("GetOrLoad near expiry = %q, %v, %v", v, ok, err)
					}
					if d := time.Since(start); d > time.Second {
						t.Errorf("a caller waited %v for the refresh", d)
					}
				})
			}
			wg.Wait()
			waitFor(t, 10*time.Second, func() bool { return l.calls.Load() >= 2 }, "the background refresh")
			waitFor(t, 10*time.Second, func() bool {
				v, ok, _ := c.Get(ctx, "hot")
				return ok && string(v) == "v:hot:2"
			}, "the refreshed value")
			if n := l.calls.Load(); n != 2 {
				t.Fatalf("loader calls = %d, want 2 (one early refresh)", n)
			}
			if st := c.Stats().Routes[0]; st.EarlyRefreshes < 1 {
				t.Fatalf("EarlyRefreshes = %d, want >= 1", st.EarlyRefreshes)
			}
		})
	}
}
