package clock

import (
	"testing"
	"time"
)

func TestManual(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := NewManual(start)
	if got := m.Now(); !got.Equal(start) {
		t.Fatalf("Now() = %v, want %v", got, start)
	}
	m.Advance(90 * time.Second)
	if got, want := m.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("after Advance, Now() = %v, want %v", got, want)
	}
}

func TestCoarseAdvances(t *testing.T) {
	c := NewCoarse(time.Millisecond)
	defer c.Close()
	first := c.UnixNano()
	deadline := time.Now().Add(10 * time.Second)
	for c.UnixNano() == first {
		if time.Now().After(deadline) {
			t.Fatal("coarse clock did not advance within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
	c.Close() // safe twice
}

func BenchmarkCoarseNow(b *testing.B) {
	c := NewCoarse(0)
	defer c.Close()
	b.ReportAllocs()
	var s int64
	for b.Loop() {
		s += c.UnixNano()
	}
	_ = s
}
