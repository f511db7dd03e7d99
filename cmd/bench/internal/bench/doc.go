// Package bench is the benchmark tool's engine: scenarios, the caches under
// test, timing and reports. cmd/bench only parses flags into a Config and
// calls Run.
//
// Scenarios:
//   - hitratio: each synthetic workload (package workload; zipfian,
//     scrambled, uniform, hotspot, defined in the tables' notes and in
//     --help) and each trace (package trace; its format named or detected
//     from its content, checked by a full Scan before any replay) replayed
//     at every size through the simulated peers (golang-lru LRU, 2Q, ARC;
//     otter) and through tiered.Cache itself: the memory tier, for every
//     policy tiered accepts (found from tracking.Policy's values), with a
//     byte budget of N entries, and memory+disk with a disk that holds the
//     whole footprint; with the compulsory-miss bound and each replay's
//     duration. Then a timed memory-only read-through run per simulated
//     policy, and thermos's layouts (memory, memory+Redis,
//     memory+disk+Redis) on the same workload and entry budget, each warmed
//     until its memory is full before it is timed, with the share of reads
//     each tier answered, origin loads, latency percentiles (HdrHistogram)
//     and throughput, and the throughput of a second run of the same warm
//     cache at 32 goroutines per processor (what the layout can serve
//     when its round trips no longer leave the cores idle).
//   - peers: one zipfian read workload, in one run, against thermos
//     memory+redis (a Raw route over the preloaded values), rueidis's
//     client-side cache (DoCache with OPTIN and with BCAST tracking),
//     golang-lru and otter in front of Redis, and Redis alone; p50 and
//     throughput are compared with thermos's as "× slower" or "× faster".
//   - staleness: an external writer updates keys at a fixed rate while
//     readers read through a client-side cache; for thermos and rueidis
//     alike the lag of a write is from its acknowledgement to the first
//     read through the cache's own read call that returned the new value
//     (signed: negative when that read beat the writer's ack), and reads are
//     counted stale within or beyond it.
//   - restart: warms --keys keys (up to MaxRestartKeys) into a
//     memory+disk+Redis cache, closes it, and compares reopening it, a
//     fresh directory with Redis warm, and a cold start: open time, time to
//     the first local hit, hit ratio and origin calls per 100 ms.
//   - stampede: K processes (the running binary re-executed as workers,
//     see WorkerEnv and Worker) × G goroutines miss one key with a slow
//     origin, with the herd off, local (per-process single-flight) and
//     shared (the Redis lease); then a key expiring under sustained reads,
//     with XFetch and without early refresh.
//
// Every cache is a Target; thermos's layouts are Targets over tiered.Cache
// (thermos.go) that also report per-tier counts (TierStatser).
//
// Run writes aligned tables and Go benchmark lines (for benchstat) to its
// stdout; progress to stderr, as a bar on a terminal and otherwise as a
// line per step and every few seconds (step, percent, ETA); warnings
// before a section's tables when the machine's load average exceeded its
// cores or the staleness writer missed its rate; and a self-contained
// report.html (a contents list, each table beside its charts, inline SVG,
// no scripts, no network) and results.json to Config.Out. Redis comes from Config.Redis (one server,
// or a comma-separated list of a Redis Cluster's nodes), a private Redis
// Cluster of three primaries (Config.RedisCluster), or a private
// redis-server, both started through internal/redisproc on free loopback
// ports; without any, the Redis-free parts still run. Every report (the
// text header, report.html, results.json's host) says whether it ran on a
// single Redis or a Redis Cluster (N primaries). Run never flushes a
// server: every key it writes starts with "bench:".
//
// On a cluster every scenario runs unchanged: rueidis routes each command
// to its slot's primary and registers client tracking on every node, the
// preload pipelines per-key SETs (an MSET across slots would fail), and
// the stampede's workers get the node addresses.
//
// Config.RedisUser, Config.RedisPassword and Config.RedisTLSCA reach every
// client the run opens: the peers, thermos's caches, the staleness writer
// and the stampede's worker processes (which read them on stdin, never
// from their arguments or environment). The password never appears in any
// output: tables, benchmark lines, report.html, results.json (it is left
// out) and errors; a Secret formats as "[redacted]".
//
// Not promised: figures are comparable between runs on one machine, not
// across machines, and latency figures move with the machine's load;
// otter's hit ratios vary slightly between runs (its admission sketch is
// seeded at random). The library packages never import this package or its
// peers (otter, golang-lru's ARC). Keys thermos writes carry a per-run token
// and expire with their route's TTL; the peers' preloaded keys stay.
package bench
