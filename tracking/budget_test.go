package tracking

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestHeapWithinBudget writes 10x the budget in random-size values: the
// counted bytes never exceed the budget, and the Go heap grows by at most
// 1.5x the budget — which also checks that EntryOverhead is honest for small
// values.
func TestHeapWithinBudget(t *testing.T) {
	const budget = 16 << 20
	for _, tt := range []struct {
		name   string
		maxVal int
	}{{"tiny values", 64}, {"mixed values", 16 << 10}} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c, err := New(t.Context(), &Options{MaxBytes: budget})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(7, 7))
			var written, peak int64
			for i := 0; written < 10*budget; i++ {
				n := rng.IntN(tt.maxVal + 1)
				if err := c.SetLocal(fmt.Sprintf("key:%d", rng.IntN(1<<20)), Item{Value: make([]byte, n)}); err != nil {
					t.Fatal(err)
				}
				written += int64(n) + EntryOverhead
				if i%1024 == 0 {
					st := c.Stats()
					peak = max(peak, st.Bytes)
					if st.Bytes > budget {
						t.Fatalf("counted bytes %d > budget %d", st.Bytes, budget)
					}
				}
			}
			st := c.Stats()
			runtime.GC()
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			ratio := float64(growth) / budget
			t.Logf("%s: %d entries, counted %d bytes (peak %d) of %d; heap growth %d bytes = %.2fx budget",
				tt.name, st.Entries, st.Bytes, peak, int64(budget), growth, ratio)
			if ratio > 1.5 {
				t.Errorf("heap grew %.2fx the budget, want <= 1.5x", ratio)
			}
			if st.Bytes > budget || st.Evictions == 0 {
				t.Errorf("Bytes %d, Evictions %d", st.Bytes, st.Evictions)
			}
			runtime.KeepAlive(c)
		})
	}
}
