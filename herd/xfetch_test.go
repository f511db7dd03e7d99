package herd

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
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
