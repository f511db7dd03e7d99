package tracking

import (
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
)

// TestHitYieldFollowsClock: with a coarse clock a lock-free hit yields
// (Options.HitYield) only while the clock's ticks fall behind, the sign
// that every processor is kept busy; with any other clock it yields every
// HitYield hits of a goroutine.
func TestHitYieldFollowsClock(t *testing.T) {
	const (
		every = 16
		hits  = 64 * every
	)
	yields := func(t *testing.T, clk Clock) uint64 {
		c := newLocal(t, &Options{HitYield: every, Clock: clk})
		if err := c.SetLocal("k", item("v")); err != nil {
			t.Fatal(err)
		}
		for range hits {
			if _, ok := c.LookupFresh("k"); !ok {
				t.Fatal("LookupFresh(k) missed")
			}
		}
		return c.Stats().Yields
	}
	// A goroutine keeps its counter stripe unless its stack moves, which
	// a test this short does at most once or twice.
	const want, slack = hits / every, 2
	t.Run("keeping-up", func(t *testing.T) {
		// An hour's resolution: its tick cannot be two resolutions late.
		k := clock.NewCoarse(time.Hour)
		defer k.Close()
		if n := yields(t, k); n != 0 {
			t.Errorf("%d yields with a coarse clock that keeps up, want 0", n)
		}
	})
	t.Run("behind", func(t *testing.T) {
		k := clock.NewCoarse(time.Microsecond)
		k.Close() // it stops ticking, so it falls behind
		deadline := time.Now().Add(10 * time.Second)
		for k.Behind() <= 2*k.Resolution() {
			if time.Now().After(deadline) {
				t.Fatalf("a stopped coarse clock is only %v behind", k.Behind())
			}
			time.Sleep(time.Millisecond)
		}
		if n := yields(t, k); n+slack < want || n > want {
			t.Errorf("%d yields in %d hits with a coarse clock that fell behind, want %d", n, hits, want)
		}
	})
	t.Run("manual", func(t *testing.T) {
		if n := yields(t, clock.NewManual(time.Now())); n+slack < want || n > want {
			t.Errorf("%d yields in %d hits with a manual clock, want %d", n, hits, want)
		}
	})
}
