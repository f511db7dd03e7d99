package tiered

import (
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/internal/metrics"
)

// routeStats are one route's counters. Typed atomics only; each route has
// its own, so routes do not contend with each other.
type routeStats struct {
	// Memory hits are counted by the memory tier under the item's tag
	// (the route's index), with no counter of ours on the hit path;
	// memSlowHits counts the memory entries the slow path served (vouched
	// for by Redis, local copies after an epoch bump, stale values served).
	memSlowHits                 atomic.Int64
	diskHits, redisHits         atomic.Int64
	misses, loads, loadErrors   atomic.Int64
	degradedLoads               atomic.Int64
	staleServes, earlyRefreshes atomic.Int64
	unverifiedReads             atomic.Int64
	revalidated, dropped        atomic.Int64
	integrityFailures           atomic.Int64

	loadLatency, diskLatency, redisLatency metrics.Histogram
}

// cacheStats are the cache-wide counters.
type cacheStats struct {
	warmed, revalidated, dropped atomic.Int64
	epochBumps                   atomic.Int64
	lastRevalidation             atomic.Int64 // ns
	passes                       atomic.Int64 // completed revalidation passes
	diskReads, diskWrites        atomic.Int64 // store calls outside write-behind
	diskCorrupt                  atomic.Int64 // disk entries refused (checksum, signature, limit)
}

// RouteStats are one route's counters since Open.
type RouteStats struct {
	Prefix string
	Tiers  Tier

	// Every read (Get, GetOrLoad, each key of GetMany) counts exactly once:
	// as a hit of the tier that answered it (a stale or unverified value
	// served counts as a hit too, and also in StaleServes), or as a miss.
	MemoryHits, DiskHits, RedisHits int64
	Misses                          int64
	// Loads counts calls of the loader by this process; LoadErrors those
	// that failed. DegradedLoads counts the loads of a route with Redis
	// that ran without the fleet-wide lease, because Redis could not give
	// it (unreachable, OOM, read-only).
	Loads, LoadErrors, DegradedLoads int64
	StaleServes                      int64 // stale-on-error and stale-while-revalidate
	EarlyRefreshes                   int64 // XFetch refreshes started
	UnverifiedReads                  int64 // reads that met an unverified entry
	Revalidated, Dropped             int64 // unverified entries confirmed / dropped
	IntegrityFailures                int64 // undecodable or unverifiable values refused

	// Latencies of the loader, of disk reads (including any revalidation
	// round trip) and of Redis GETs. Memory hits are not timed: timing
	// would cost as much as the hit.
	LoadLatency, DiskLatency, RedisLatency Latency
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

func latencyOf(h *metrics.Histogram) Latency {
	s := h.Snapshot()
	return Latency{Count: s.Count, Sum: s.Sum, Max: s.Max, s: s}
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1), capped by Max, or 0 without samples.
func (l Latency) Quantile(q float64) time.Duration { return l.s.Quantile(q) }

// Mean returns the average sample, or 0 without samples.
func (l Latency) Mean() time.Duration { return l.s.Mean() }

// Hits is the sum of every tier's hits.
func (s RouteStats) Hits() int64 { return s.MemoryHits + s.DiskHits + s.RedisHits }

// HitRatio is hits over hits plus misses; 0 with no reads.
func (s RouteStats) HitRatio() float64 {
	n := s.Hits() + s.Misses
	if n == 0 {
		return 0
	}
	return float64(s.Hits()) / float64(n)
}

// Stats is a snapshot of a Cache's counters.
type Stats struct {
	Routes []RouteStats // longest prefix first
	// Warmed is how many entries were loaded from disk into memory at Open.
	Warmed int64
	// Revalidated and Dropped count unverified entries checked against
	// Redis in the background (after a restart or a reconnect).
	Revalidated, Dropped int64
	// EpochBumps counts tracking-connection losses and FLUSHALLs seen.
	EpochBumps int64
	// LastRevalidation is how long the last complete background
	// revalidation pass took.
	LastRevalidation time.Duration
	// RevalidationPasses counts complete background revalidation passes
	// (one after Open, one after each epoch bump once Redis answers).
	RevalidationPasses int64
	// DiskReads counts reads of the disk tier: point reads and scans
	// (warm-up, background revalidation, InvalidatePrefix).
	DiskReads int64
	// DiskWrites counts entries written to or deleted from the disk tier.
	DiskWrites int64
	// DiskWritesDropped counts fills (copies read from a slower tier or
	// loaded) not queued for the disk because the write-behind queue was
	// full. Acknowledged writes and deletes are never dropped.
	DiskWritesDropped int64
	// DiskWriteErrors counts disk writes that failed.
	DiskWriteErrors int64
	// DiskCorrupt counts disk entries refused on read: a bad checksum, a
	// signature that does not verify, a value over its route's limit.
	DiskCorrupt int64
	// DiskErr is the disk tier's fault while it is off (reads and writes
	// skip it; see the package doc, Disk faults), nil while it works: what
	// Err returns. DiskFaults counts the times the tier turned off,
	// DiskRecoveries the times it came back, and DiskWritesSkipped the
	// writes and deletes it did not take while off.
	DiskErr                                       error
	DiskFaults, DiskRecoveries, DiskWritesSkipped int64
	// Memory-tier totals.
	MemoryBytes   int64
	MemoryEntries int
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	st := Stats{
		Warmed:           c.stats.warmed.Load(),
		Revalidated:      c.stats.revalidated.Load(),
		Dropped:          c.stats.dropped.Load(),
		EpochBumps:       c.stats.epochBumps.Load(),
		LastRevalidation: time.Duration(c.stats.lastRevalidation.Load()),

		RevalidationPasses: c.stats.passes.Load(),
		DiskReads:          c.stats.diskReads.Load(),
		DiskWrites:         c.stats.diskWrites.Load(),
	}
	var tagHits [256]uint64
	if c.mem != nil {
		tagHits = c.mem.Stats().TagHits
	}
	for _, r := range c.router.routes {
		s := &r.stats
		st.Routes = append(st.Routes, RouteStats{
			Prefix: r.Prefix, Tiers: r.Tiers,
			MemoryHits: int64(tagHits[r.idx]) + s.memSlowHits.Load(), DiskHits: s.diskHits.Load(), RedisHits: s.redisHits.Load(),
			Misses: s.misses.Load(), Loads: s.loads.Load(), LoadErrors: s.loadErrors.Load(), DegradedLoads: s.degradedLoads.Load(),
			StaleServes: s.staleServes.Load(), EarlyRefreshes: s.earlyRefreshes.Load(),
			UnverifiedReads: s.unverifiedReads.Load(),
			Revalidated:     s.revalidated.Load(), Dropped: s.dropped.Load(),
			IntegrityFailures: s.integrityFailures.Load(),
			LoadLatency:       latencyOf(&s.loadLatency),
			DiskLatency:       latencyOf(&s.diskLatency),
			RedisLatency:      latencyOf(&s.redisLatency),
		})
	}
	if c.disk != nil {
		c.disk.health(&st)
		st.DiskWritesDropped = c.disk.wb.dropped.Load()
		st.DiskWriteErrors = c.disk.wb.failed.Load()
		st.DiskWrites += c.disk.wb.committed.Load()
	}
	st.DiskCorrupt = c.stats.diskCorrupt.Load()
	if c.mem != nil {
		ms := c.mem.Stats()
		st.MemoryBytes, st.MemoryEntries = ms.Bytes, ms.Entries
	}
	return st
}
