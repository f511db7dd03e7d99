package metrics

import (
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{1, 1000 * time.Microsecond},
	}
	for _, tt := range tests {
		got := s.Quantile(tt.q)
		// A bucket is at most 1/8 of its value wide; the bound is above.
		if got < tt.want || float64(got) > float64(tt.want)*1.125 {
			t.Errorf("Quantile(%v) = %v, want within 12.5%% above %v", tt.q, got, tt.want)
		}
	}
	if s.Count != 1000 || s.Max != time.Millisecond {
		t.Errorf("Count %d Max %v, want 1000 and 1ms", s.Count, s.Max)
	}
	if m := s.Mean(); m < 500*time.Microsecond || m > 501*time.Microsecond {
		t.Errorf("Mean = %v, want 500.5µs", m)
	}
	var empty Histogram
	es := empty.Snapshot()
	if es.Quantile(0.5) != 0 || es.Mean() != 0 {
		t.Error("empty histogram reports a value")
	}
}

func TestBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []uint64{0, 1, 7, 8, 9, 15, 16, 1000, 1 << 40, 1<<63 - 1, 1<<64 - 1} {
		b := bucket(v)
		if b < 0 || b >= buckets {
			t.Fatalf("bucket(%d) = %d out of range", v, b)
		}
		if upper(b) < v || (b > 0 && upper(b-1) >= v) {
			t.Fatalf("value %d not inside bucket %d (upper %d)", v, b, upper(b))
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i))
	}
}
