package herd

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Group's counters since New. All counts are for
// this process only.
type Stats struct {
	// Flights is how many flights started: one per key per rebuild attempt,
	// however many callers shared it (Do and Refresh).
	Flights uint64
	// SharedWaits is how many Do calls joined a flight another call started.
	SharedWaits uint64
	// Loads is how many times the load function ran.
	Loads uint64
	// LoadErrors counts loads that returned an error or panicked; Panics
	// counts the panics alone.
	LoadErrors, Panics uint64
	// Hits is how many flights found the value already there (lookup, or the
	// data key in Redis) and did not load.
	Hits uint64
	// LockAcquired counts leases taken. LockSteals counts the subset taken
	// after a wait that ended without a notification: the previous holder's
	// lease ran out (it died or hung). LockWaits counts flights that found
	// the lease held and waited for it.
	LockAcquired, LockSteals, LockWaits uint64
	// LockRenewals counts successful lease renewals; LockLosses counts
	// holders that found their lease gone (renewal or fenced write refused).
	LockRenewals, LockLosses uint64
	// FencedWrites counts values stored by a fenced write;
	// FencedWritesRefused counts writes refused because the writer no longer
	// held the lease, so a newer value was kept.
	FencedWrites, FencedWritesRefused uint64
	// RefreshesSkipped counts Refresh attempts that found the lease held or
	// the value already replaced, and so did not load.
	RefreshesSkipped uint64
	// Wakeups counts notifications that woke a waiting flight (pub/sub and
	// Wake).
	Wakeups uint64
	// WakeLatency is the distribution of the delay between a holder
	// publishing its value and this process receiving the notification,
	// measured with the two processes' wall clocks.
	WakeLatency Histogram
	// ScriptFallback reports whether the Group uses WATCH/MULTI transactions
	// instead of Lua scripts.
	ScriptFallback bool
}

// histBuckets is the number of power-of-two microsecond buckets of a
// Histogram: the last one holds everything from about 2^30 µs up.
const histBuckets = 32

// Histogram counts durations in power-of-two buckets of microseconds:
// Buckets[0] holds durations under 1µs, Buckets[i] those in [2^(i-1), 2^i) µs.
type Histogram struct {
	Buckets [histBuckets]uint64
	Count   uint64
	Sum     time.Duration
	Max     time.Duration
}

// Quantile returns an upper bound of the q-quantile (0 < q <= 1): the upper
// edge of the bucket holding it, capped by Max. It returns 0 when empty.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(q * float64(h.Count))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, n := range h.Buckets {
		seen += n
		if seen >= rank {
			edge := time.Duration(1<<i) * time.Microsecond
			return min(edge, h.Max)
		}
	}
	return h.Max
}

type histogram struct {
	buckets [histBuckets]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Int64
	max     atomic.Int64
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	i := min(bits.Len64(us), histBuckets-1)
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
}

func (h *histogram) snapshot() Histogram {
	var s Histogram
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
	}
	s.Count = h.count.Load()
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	return s
}

type counters struct {
	flights, sharedWaits, loads, loadErrors, panics, hits atomic.Uint64
	lockAcquired, lockSteals, lockWaits                   atomic.Uint64
	lockRenewals, lockLosses                              atomic.Uint64
	fencedWrites, fencedRefused, refreshSkipped, wakeups  atomic.Uint64
	wakeLatency                                           histogram
}

// Stats returns a snapshot of the Group's counters. It is safe to call at any
// time, including after Close.
func (g *Group) Stats() Stats {
	c := &g.stats
	return Stats{
		Flights:             c.flights.Load(),
		SharedWaits:         c.sharedWaits.Load(),
		Loads:               c.loads.Load(),
		LoadErrors:          c.loadErrors.Load(),
		Panics:              c.panics.Load(),
		Hits:                c.hits.Load(),
		LockAcquired:        c.lockAcquired.Load(),
		LockSteals:          c.lockSteals.Load(),
		LockWaits:           c.lockWaits.Load(),
		LockRenewals:        c.lockRenewals.Load(),
		LockLosses:          c.lockLosses.Load(),
		FencedWrites:        c.fencedWrites.Load(),
		FencedWritesRefused: c.fencedRefused.Load(),
		RefreshesSkipped:    c.refreshSkipped.Load(),
		Wakeups:             c.wakeups.Load(),
		WakeLatency:         c.wakeLatency.snapshot(),
		ScriptFallback:      g.noScripts.Load(),
	}
}
