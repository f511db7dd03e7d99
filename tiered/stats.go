package tiered

import "sync/atomic"

// routeStats are one route's counters. Typed atomics only; each route has
// its own, so routes do not contend.
type routeStats struct {
	memHits, diskHits, redisHits atomic.Int64
	misses, loads, loadErrors    atomic.Int64
	staleServes, earlyRefreshes  atomic.Int64
	unverifiedReads, negHits     atomic.Int64
	integrityFailures            atomic.Int64
}
