// Package workload generates the benchmark tool's synthetic key streams:
// YCSB-style zipfian (Gray et al.'s algorithm, θ in (0, 1) including 0.99),
// scrambled zipfian (YCSB's FNV scramble), uniform and hotspot key choosers,
// and the YCSB core read/write mixes A, B, C and F.
//
// Every generator draws from its own seeded PCG source (math/rand/v2), so a
// seed fully determines the stream. A generator is not safe for concurrent
// use: give each goroutine its own, seeded differently (see Seed).
//
// It does not promise bit-for-bit the same streams as YCSB's Java code (the
// random sources differ); it promises the same distributions.
package workload
