package workload

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkNext compares the generators with math/rand/v2's Zipf (which
// needs s > 1, so θ = 0.99 is out of its reach) as the baseline.
func BenchmarkNext(b *testing.B) {
	const keys = 100_000
	b.Run("baseline-rand.Zipf-s1.01", func(b *testing.B) {
		z := rand.NewZipf(Seed(1, 0), 1.01, 1, keys-1)
		b.ReportAllocs()
		var sink uint64
		for b.Loop() {
			sink += z.Uint64()
		}
		_ = sink
	})
	for _, d := range []string{Zipfian, ScrambledZipfian, Uniform, Hotspot} {
		g, err := New(Spec{Distribution: d, Keys: keys}, Seed(1, 0))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(d, func(b *testing.B) {
			b.ReportAllocs()
			var sink uint64
			for b.Loop() {
				sink += g.Next()
			}
			_ = sink
		})
	}
}
