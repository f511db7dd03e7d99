// Package bench is the benchmark tool's engine: scenarios, the caches under
// test, timing and reports. cmd/bench only parses flags into a Config and
// calls Run.
//
// Scenarios:
//   - hitratio: a cache-size sweep of eviction policies (golang-lru LRU,
//     2Q, ARC; otter) on synthetic workloads (package workload) and real
//     traces (package trace), and a timed memory-only read-through run per
//     policy for latency percentiles (HdrHistogram) and throughput.
//   - peers: one zipfian read workload, in one run, against rueidis's
//     client-side cache (DoCache with OPTIN and with BCAST tracking),
//     golang-lru and otter in front of Redis, and Redis alone.
//   - staleness: an external writer updates keys at a fixed rate while
//     readers read through a client-side cache; it reports the invalidation
//     lag distribution and counts stale reads within and beyond it.
//   - restart and stampede need the tiered and herd packages and are
//     refused with ErrUnavailable until they exist.
//
// Every cache is a Target; thermos's layouts are Targets over
// tiered.Cache (thermos.go) that also report per-tier counts
// (TierStatser): the hit-ratio scenario times memory-only, memory+Redis and
// memory+disk+Redis; peers compares every other cache to thermos
// memory+redis as ratios; staleness measures thermos's own view of the lag.
//
// Run writes aligned tables and Go benchmark lines (for benchstat) to its
// stdout, progress to stderr only when stderr is a terminal, and a
// self-contained report.html (inline SVG, no scripts, no network) and
// results.json to Config.Out. Redis comes from Config.Redis, or a private
// redis-server started through internal/redisproc on a free loopback port;
// without either, the Redis-free parts still run. Run never flushes a
// server: every key it writes starts with "bench:".
//
// Not promised: figures are comparable between runs on one machine, not
// across machines; otter's hit ratios vary slightly between runs (its
// admission sketch is seeded at random). The library packages never import
// this package or its peers (otter, golang-lru's ARC).
package bench
