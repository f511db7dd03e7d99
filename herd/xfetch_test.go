package herd

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
)

func TestShouldRefreshEdges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		now   time.Time
		delta time.Duration
		beta  float64
		r     float64
		want  bool
	}{
		{"at soft expiry", t0, time.Second, 1, 0.999, true},
		{"after soft expiry", t0.Add(time.Second), time.Second, 1, 1, true},
		{"far before, high draw", t0.Add(-time.Hour), time.Second, 1, 0.5, false},
		{"just inside the draw", t0.Add(-time.Second), time.Second, 1, math.Exp(-1) - 1e-9, true},
		{"just outside the draw", t0.Add(-time.Second), time.Second, 1, math.Exp(-1) + 1e-9, false},
		{"beta doubles the reach", t0.Add(-2 * time.Second), time.Second, 2, math.Exp(-1) - 1e-9, true},
		{"zero delta before expiry", t0.Add(-time.Nanosecond), 0, 1, 1e-12, false},
		{"zero beta before expiry", t0.Add(-time.Nanosecond), time.Second, 0, 1e-12, false},
		{"r of zero refreshes", t0.Add(-time.Hour), time.Second, 1, 0, true},
		{"r above one never refreshes early", t0.Add(-time.Nanosecond), time.Second, 1, 1.5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ShouldRefresh(tt.now, t0, tt.delta, tt.beta, tt.r)
			if got != tt.want {
				t.Errorf("ShouldRefresh(now=soft%+v, delta=%v, beta=%v, r=%v) = %v, want %v",
					tt.now.Sub(t0), tt.delta, tt.beta, tt.r, got, tt.want)
			}
		})
	}
}

// TestShouldRefreshDistribution checks that, a gap x before expiry, the
// share of uniform draws that refresh is exp(-x/(delta*beta)).
func TestShouldRefreshDistribution(t *testing.T) {
	const n = 200_000
	soft := time.Unix(5000, 0)
	delta := 100 * time.Millisecond
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gap  time.Duration
		beta float64
	}{
		{"gap 0.1 delta", 10 * time.Millisecond, 1},
		{"gap 0.5 delta", 50 * time.Millisecond, 1},
		{"gap 1 delta", 100 * time.Millisecond, 1},
		{"gap 2 delta", 200 * time.Millisecond, 1},
		{"gap 4 delta", 400 * time.Millisecond, 1},
		{"gap 2 delta beta 2", 200 * time.Millisecond, 2},
		{"gap 1 delta beta 0.5", 100 * time.Millisecond, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := 0
			for range n {
				if ShouldRefresh(soft.Add(-tt.gap), soft, delta, tt.beta, 1-rng.Float64()) {
					hits++
				}
			}
			got := float64(hits) / n
			want := math.Exp(-float64(tt.gap) / (float64(delta) * tt.beta))
			// Five standard deviations of a binomial share.
			tol := 5 * math.Sqrt(want*(1-want)/n)
			if math.Abs(got-want) > tol {
				t.Errorf("share refreshing = %.4f, want %.4f ± %.4f", got, want, tol)
			}
		})
	}
}

func TestGroupXFetchUsesClockAndRand(t *testing.T) {
	clk := clock.NewManual(time.Unix(100, 0))
	g := newGroup(t, &Options{Clock: clk, Rand: rand.NewPCG(3, 4)})
	soft := time.Unix(140, 0)
	// Forty deltas before expiry: probability e^-40, so never in practice.
	for i := range 1000 {
		if g.XFetch(soft, time.Second) {
			t.Fatalf("XFetch 40 deltas early said refresh at draw %d", i)
		}
	}
	clk.Set(soft)
	if !g.XFetch(soft, time.Second) {
		t.Errorf("XFetch at soft expiry = false, want true")
	}
}

func TestGroupFloat64InRange(t *testing.T) {
	g := newGroup(t, &Options{Rand: rand.NewPCG(5, 6)})
	sum := 0.0
	const n = 100_000
	for range n {
		f := g.float64()
		if f <= 0 || f > 1 {
			t.Fatalf("float64() = %v, want (0, 1]", f)
		}
		sum += f
	}
	if mean := sum / n; math.Abs(mean-0.5) > 0.01 {
		t.Errorf("mean draw = %.4f, want 0.5", mean)
	}
}
