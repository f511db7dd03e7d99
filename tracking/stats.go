package tracking

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Cache's counters. Counters only grow.
type Stats struct {
	Hits             uint64 // Get found an entry (fresh or, with KeepUnverified, unverified)
	Misses           uint64 // Get found nothing usable
	Inserts          uint64 // entries stored by Fill, Set and SetLocal
	Evictions        uint64 // entries evicted to stay within the byte budget
	Expired          uint64 // entries removed by Get past MaxTTL or HardExpiry
	UnverifiedServes uint64 // hits returned with fresh == false
	Refused          uint64 // fills and writes refused by an invalidated ticket
	TooLarge         uint64 // entries refused for exceeding MaxEntryBytes
	Removed          uint64 // entries removed by invalidations
	Invalidations    uint64 // keys received in Redis invalidation messages
	EpochBumps       uint64 // null invalidations: FLUSHALL/FLUSHDB, connection drops
	Epoch            uint64 // current epoch
	Entries          int    // entries now cached
	Bytes            int64  // bytes now counted; never above MaxBytes
	MaxBytes         int64  // the budget
	// Lag is the time from sending a Set to receiving its own invalidation
	// from Redis (empty with NoLoop or without Redis).
	Lag LagHistogram
}

// Stats returns a snapshot. It locks each shard in turn, briefly.
func (c *Cache) Stats() Stats {
	st := Stats{
		Invalidations: c.invalidations.Load(),
		EpochBumps:    c.epochBumps.Load(),
		Epoch:         c.epoch.Load(),
		MaxBytes:      c.cfg.MaxBytes,
		Lag:           c.lag.snapshot(),
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Hits += s.mu.hits
		st.Misses += s.mu.misses
		st.Inserts += s.mu.inserts
		st.Evictions += s.mu.evictions
		st.Expired += s.mu.expired
		st.UnverifiedServes += s.mu.unverifiedServes
		st.Refused += s.mu.refused
		st.TooLarge += s.mu.tooLarge
		st.Removed += s.mu.removed
		st.Bytes += s.mu.bytes
		st.Entries += s.mu.pol.len()
		s.mu.Unlock()
	}
	return st
}

// lagBuckets: values below 8ns have a bucket each; above, every power of two
// is split into 8 buckets, so a bucket's width is at most 1/8 of its value.
const (
	lagSub     = 8
	lagBuckets = 64 * lagSub
)

type lagHistogram struct {
	counts [lagBuckets]atomic.Uint64
}

func lagBucket(v uint64) int {
	if v < lagSub {
		return int(v)
	}
	exp := bits.Len64(v) - 4 // v>>exp is in [8, 16)
	return (exp+1)*lagSub + int(v>>exp) - lagSub
}

// lagUpper returns the largest value in bucket b.
func lagUpper(b int) uint64 {
	if b < lagSub {
		return uint64(b)
	}
	exp := b/lagSub - 1
	mant := uint64(b%lagSub + lagSub)
	return (mant+1)<<exp - 1
}

func (h *lagHistogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[lagBucket(uint64(d))].Add(1)
}

func (h *lagHistogram) snapshot() LagHistogram {
	var s LagHistogram
	for i := range h.counts {
		n := h.counts[i].Load()
		s.counts[i] = n
		s.Count += n
	}
	return s
}

// LagHistogram is a latency histogram with buckets 1/8 of their value wide.
type LagHistogram struct {
	Count  uint64 // samples
	counts [lagBuckets]uint64
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1),
// or 0 without samples.
func (h LagHistogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.Count-1)) + 1
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			return time.Duration(lagUpper(i))
		}
	}
	return time.Duration(lagUpper(lagBuckets - 1))
}
