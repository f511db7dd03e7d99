// Package metrics holds the lock-free latency histogram that the tiers
// record into and report in their Stats.
package metrics

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets: values below sub nanoseconds have a bucket each; above, every
// power of two is split into sub buckets, so a bucket is at most 1/8 of its
// value wide (12.5% resolution) at any scale.
const (
	sub     = 8
	buckets = 64 * sub
)

// Histogram records durations. The zero value is ready; it is safe for
// concurrent use, and Record is a few atomic adds.
type Histogram struct {
	counts [buckets]atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

func bucket(v uint64) int {
	if v < sub {
		return int(v)
	}
	exp := bits.Len64(v) - 4 // v>>exp is in [8, 16)
	return (exp+1)*sub + int(v>>exp) - sub
}

// upper returns the largest value in bucket b.
func upper(b int) uint64 {
	if b < sub {
		return uint64(b)
	}
	exp := b/sub - 1
	mant := uint64(b%sub + sub)
	return (mant+1)<<exp - 1
}

// Record adds one duration; negative counts as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucket(uint64(d))].Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Snapshot returns the counts so far.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		n := h.counts[i].Load()
		s.counts[i] = n
		s.Count += n
	}
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	return s
}

// Snapshot is a histogram's state at one moment.
type Snapshot struct {
	Count  uint64        // samples
	Sum    time.Duration // of all samples
	Max    time.Duration // largest sample
	counts [buckets]uint64
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1), capped by Max, or 0 without samples.
func (s Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(s.Count-1)) + 1
	var seen uint64
	for i, n := range s.counts {
		seen += n
		if seen >= rank {
			return min(time.Duration(upper(i)), s.Max)
		}
	}
	return s.Max
}

// Mean returns the average sample, or 0 without samples.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}
