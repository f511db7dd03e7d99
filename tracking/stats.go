package tracking

import (
	"time"

	"github.com/thermoscache/thermos/internal/metrics"
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
	EpochBumps       uint64 // null invalidations (FLUSHALL/FLUSHDB, connection drops), re-arms after them, topology changes
	TopologyChanges  uint64 // Redis Cluster slot map changes seen (each also an epoch bump)
	Yields           uint64 // lock-free hits that yielded their processor (Options.HitYield)
	Epoch            uint64 // current epoch
	Entries          int    // entries now cached
	Bytes            int64  // bytes now counted; never above MaxBytes
	MaxBytes         int64  // the budget
	// TagHits counts Lookup and Get hits by the entries' Item.Tag.
	TagHits [256]uint64
	// Lag is the time from sending a Set to receiving its own invalidation
	// from Redis (empty with NoLoop or without Redis).
	Lag Latency
}

// Stats returns a snapshot. It locks each shard in turn, briefly.
func (c *Cache) Stats() Stats {
	st := Stats{
		Invalidations:   c.invalidations.Load(),
		EpochBumps:      c.epochBumps.Load(),
		TopologyChanges: c.topologyChanges.Load(),
		Yields:          c.yields.Load(),
		Epoch:           c.epoch.Load(),
		MaxBytes:        c.cfg.MaxBytes,
		Lag:             latencyOf(c.lag.Snapshot()),
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Inserts += s.mu.inserts
		st.Evictions += s.mu.evictions
		st.Expired += s.mu.expired
		st.Refused += s.mu.refused
		st.TooLarge += s.mu.tooLarge
		st.Removed += s.mu.removed
		st.Bytes += s.mu.bytes
		st.Entries += s.mu.pol.len()
		s.mu.Unlock()
	}
	c.lf.sum(&st)
	return st
}

// Latency is a latency distribution at one moment: how many samples, their
// sum and maximum, and counts in buckets at most 1/8 of their value wide,
// from which Quantile reads.
type Latency struct {
	Count uint64        // samples
	Sum   time.Duration // of all samples
	Max   time.Duration // largest sample
	s     metrics.Snapshot
}

func latencyOf(s metrics.Snapshot) Latency {
	return Latency{Count: s.Count, Sum: s.Sum, Max: s.Max, s: s}
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1), capped by Max, or 0 without samples.
func (l Latency) Quantile(q float64) time.Duration { return l.s.Quantile(q) }

// Mean returns the average sample, or 0 without samples.
func (l Latency) Mean() time.Duration { return l.s.Mean() }
