package workload

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"testing"
)

// counts draws n keys from g and returns their frequencies.
func counts(t *testing.T, g Generator, keys uint64, n int) []int {
	t.Helper()
	c := make([]int, keys)
	for range n {
		k := g.Next()
		if k >= keys {
			t.Fatalf("Next() = %d, want < %d", k, keys)
		}
		c[k]++
	}
	return c
}

func TestZipfianMatchesTheory(t *testing.T) {
	tests := []struct {
		name  string
		keys  uint64
		theta float64
	}{
		{"ycsb-0.99", 1000, 0.99},
		{"mild-0.5", 1000, 0.5},
		{"steep-0.9", 10000, 0.9},
	}
	const draws = 400_000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewZipfian(tt.keys, tt.theta, Seed(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			c := counts(t, g, tt.keys, draws)
			zn := zeta(tt.keys, tt.theta)
			// Ranks 1 and 2 are exact in Gray's method; check them within
			// 4 standard deviations of the binomial.
			for rank := 1; rank <= 2; rank++ {
				p := 1 / math.Pow(float64(rank), tt.theta) / zn
				sd := math.Sqrt(draws * p * (1 - p))
				if got, want := float64(c[rank-1]), draws*p; math.Abs(got-want) > 4*sd {
					t.Errorf("rank %d count = %v, want %.0f ± %.0f", rank, got, want, 4*sd)
				}
			}
			// Gray's method approximates the tail; the head (top 10 % of
			// keys) must still carry the theoretical share within 2 %.
			head := tt.keys / 10
			var got, want float64
			for i := uint64(0); i < head; i++ {
				got += float64(c[i])
				want += 1 / math.Pow(float64(i+1), tt.theta) / zn
			}
			if got /= draws; math.Abs(got-want) > 0.02 {
				t.Errorf("top 10%% share = %.4f, want %.4f ± 0.02", got, want)
			}
			// Popularity falls with rank: the first decile beats the last.
			var first, last int
			for i := uint64(0); i < tt.keys/10; i++ {
				first += c[i]
				last += c[tt.keys-1-i]
			}
			if first <= 2*last {
				t.Errorf("first decile %d not well above last decile %d", first, last)
			}
		})
	}
}

// chiSquare returns Pearson's statistic of c against expected counts e.
func chiSquare(c []int, e []float64) float64 {
	var x float64
	for i := range c {
		d := float64(c[i]) - e[i]
		x += d * d / e[i]
	}
	return x
}

func TestUniformChiSquare(t *testing.T) {
	const keys, draws = 100, 200_000
	g, err := NewUniform(keys, Seed(7, 0))
	if err != nil {
		t.Fatal(err)
	}
	e := make([]float64, keys)
	for i := range e {
		e[i] = draws / keys
	}
	// 99 degrees of freedom: the 0.999 quantile is about 148.
	if x := chiSquare(counts(t, g, keys, draws), e); x > 148 {
		t.Errorf("chi-square = %.1f, want < 148 for a uniform stream", x)
	}
}

func TestHotspotShares(t *testing.T) {
	const keys, draws = 1000, 200_000
	g, err := NewHotspot(keys, 0.1, 0.9, Seed(3, 0))
	if err != nil {
		t.Fatal(err)
	}
	c := counts(t, g, keys, draws)
	hot := 0
	for _, n := range c[:100] {
		hot += n
	}
	if got := float64(hot) / draws; math.Abs(got-0.9) > 0.01 {
		t.Errorf("hot share = %.4f, want 0.9 ± 0.01", got)
	}
	// Within the hot set picks are uniform.
	e := make([]float64, 100)
	for i := range e {
		e[i] = float64(hot) / 100
	}
	if x := chiSquare(c[:100], e); x > 148 {
		t.Errorf("hot set chi-square = %.1f, want < 148", x)
	}
}

func TestScrambledZipfianSpreadsTheHead(t *testing.T) {
	const keys, draws = 1000, 200_000
	for _, theta := range []float64{0.99, 0.8} {
		g, err := NewScrambledZipfian(keys, theta, Seed(5, 0))
		if err != nil {
			t.Fatal(err)
		}
		c := counts(t, g, keys, draws)
		best, bestN := 0, 0
		for i, n := range c {
			if n > bestN {
				best, bestN = i, n
			}
		}
		if best == 0 {
			t.Errorf("θ=%v: most popular key is 0; the scramble should move it", theta)
		}
		// Skewed: the most popular key gets far more than a uniform share.
		if bestN < 10*draws/keys {
			t.Errorf("θ=%v: top key count %d, want ≥ %d (skew)", theta, bestN, 10*draws/keys)
		}
	}
}

func TestFNVHashMatchesYCSB(t *testing.T) {
	// YCSB's fnvhash64 is FNV-1a over the value's little-endian bytes, made
	// non-negative with Java's Math.abs; compare with hash/fnv.
	for _, in := range []uint64{0, 1, 255, 1 << 40, math.MaxUint64} {
		h := fnv.New64a()
		_, _ = h.Write(binary.LittleEndian.AppendUint64(nil, in))
		want := h.Sum64()
		if int64(want) < 0 {
			want = uint64(-int64(want))
		}
		if got := fnvHash64(in); got != want {
			t.Errorf("fnvHash64(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestDeterministic(t *testing.T) {
	for _, d := range []string{Zipfian, ScrambledZipfian, Uniform, Hotspot} {
		a, err := New(Spec{Distribution: d, Keys: 5000}, Seed(42, 1))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := New(Spec{Distribution: d, Keys: 5000}, Seed(42, 1))
		o, _ := New(Spec{Distribution: d, Keys: 5000}, Seed(42, 2))
		same, differ := true, false
		for range 1000 {
			x, y, z := a.Next(), b.Next(), o.Next()
			same = same && x == y
			differ = differ || x != z
		}
		if !same {
			t.Errorf("%s: same seed gave different streams", d)
		}
		if !differ {
			t.Errorf("%s: streams 1 and 2 of a seed are identical", d)
		}
	}
}

func TestInvalidSpecs(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"no keys", Spec{Keys: 0}},
		{"theta 1", Spec{Keys: 10, Theta: 1}},
		{"theta negative", Spec{Keys: 10, Theta: -0.5}},
		{"scrambled theta 1.2", Spec{Distribution: ScrambledZipfian, Keys: 10, Theta: 1.2}},
		{"uniform no keys", Spec{Distribution: Uniform}},
		{"hotspot fraction", Spec{Distribution: Hotspot, Keys: 10, HotSetFraction: 1.5}},
		{"unknown", Spec{Distribution: "pareto", Keys: 10}},
	}
	for _, tt := range tests {
		if _, err := New(tt.spec, Seed(1, 0)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: New() error = %v, want ErrInvalid", tt.name, err)
		}
	}
}

func TestMixes(t *testing.T) {
	tests := []struct {
		name           string
		read, upd, rmw float64
	}{
		{"A", 0.5, 0.5, 0},
		{"b", 0.95, 0.05, 0},
		{"C", 1, 0, 0},
		{"F", 0.5, 0, 0.5},
	}
	const draws = 100_000
	for _, tt := range tests {
		m, err := MixByName(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := NewOps(m, Seed(9, 0))
		if err != nil {
			t.Fatal(err)
		}
		var n [3]int
		for range draws {
			n[ops.Next()]++
		}
		for i, want := range []float64{tt.read, tt.upd, tt.rmw} {
			if got := float64(n[i]) / draws; math.Abs(got-want) > 0.01 {
				t.Errorf("mix %s %v share = %.3f, want %.2f", tt.name, Op(i), got, want)
			}
		}
	}
	if _, err := MixByName("E"); !errors.Is(err, ErrInvalid) {
		t.Errorf("MixByName(E) error = %v, want ErrInvalid", err)
	}
	if _, err := NewOps(Mix{Name: "bad", Read: 0.7}, Seed(1, 0)); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewOps(shares summing to 0.7) error = %v, want ErrInvalid", err)
	}
}
