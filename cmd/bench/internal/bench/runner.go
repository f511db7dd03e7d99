package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
)

// runStats is what one timed run of a Target measured.
type runStats struct {
	ops, reads, hits, errs int64
	firstErr               error
	lat                    *Recorder
	elapsed                time.Duration
	// tiers are the answers per tier during the run, for a TierStatser
	// target; nil otherwise. hits then counts memory and disk hits.
	tiers map[string]int64
}

// tierShare returns the share of reads tier answered, or "" without
// per-tier counts.
func (s runStats) tierShare(tier string) string {
	if s.tiers == nil || s.reads == 0 {
		return ""
	}
	return fmtPct(float64(s.tiers[tier]) / float64(s.reads))
}

func (s runStats) hitRatio() float64 {
	if s.reads == 0 {
		return 0
	}
	return float64(s.hits) / float64(s.reads)
}

func (s runStats) throughput() float64 { return float64(s.ops) / s.elapsed.Seconds() }

// goroutines returns the configured number of request goroutines.
func (c Config) goroutines() int {
	if c.Goroutines > 0 {
		return c.Goroutines
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// spec returns the key distribution of workload w under c.
func (c Config) spec(w string) workload.Spec {
	return workload.Spec{Distribution: w, Keys: uint64(c.Keys), Theta: c.Theta}
}

// runTimed drives t with c.goroutines() goroutines for d, each drawing keys
// from its own seeded generator of spec and operations from mix, and
// records every operation's latency.
func runTimed(ctx context.Context, t Target, keys []string, c Config, spec workload.Spec, mix workload.Mix, d time.Duration, stream int) (runStats, error) {
	g := c.goroutines()
	gens := make([]workload.Generator, g)
	opss := make([]*workload.Ops, g)
	for i := range g {
		var err error
		if gens[i], err = workload.New(spec, workload.Seed(c.Seed, stream*1000+i)); err != nil {
			return runStats{}, err
		}
		if opss[i], err = workload.NewOps(mix, workload.Seed(c.Seed, stream*1000+500+i)); err != nil {
			return runStats{}, err
		}
	}
	var before map[string]int64
	ts, perTier := t.(TierStatser)
	if perTier {
		before = ts.TierStats()
	}
	var stop atomic.Bool
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	results := make([]runStats, g)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range g {
		wg.Go(func() {
			gen, ops := gens[i], opss[i]
			st := runStats{lat: NewRecorder()}
			var val []byte
			for !stop.Load() && ctx.Err() == nil {
				k := keys[gen.Next()]
				op := ops.Next()
				if op != workload.Read && val == nil {
					val = valueFor("w", c.ValueSize)
				}
				t0 := time.Now()
				var err error
				switch op {
				case workload.Read:
					var hit bool
					_, hit, err = t.Get(ctx, k)
					st.reads++
					if hit {
						st.hits++
					}
				case workload.Update:
					err = t.Set(ctx, k, val)
				case workload.ReadModifyWrite:
					var hit bool
					_, hit, err = t.Get(ctx, k)
					st.reads++
					if hit {
						st.hits++
					}
					if err == nil {
						err = t.Set(ctx, k, val)
					}
				}
				st.lat.Record(time.Since(t0))
				st.ops++
				if err != nil {
					st.errs++
					if st.firstErr == nil {
						st.firstErr = err
					}
				}
			}
			results[i] = st
		})
	}
	wg.Wait()
	total := runStats{lat: NewRecorder(), elapsed: time.Since(start)}
	for _, r := range results {
		total.ops += r.ops
		total.reads += r.reads
		total.hits += r.hits
		total.errs += r.errs
		if total.firstErr == nil {
			total.firstErr = r.firstErr
		}
		total.lat.Merge(r.lat)
	}
	if perTier {
		total.tiers = tierDelta(before, ts.TierStats())
		total.hits = min(total.reads, total.tiers[TierMemory]+total.tiers[TierDisk])
	}
	if err := ctx.Err(); err != nil {
		return total, err
	}
	if total.errs > 0 && total.errs*100 > total.ops {
		return total, fmt.Errorf("bench: %s: %d of %d operations failed, first: %w", t.Name(), total.errs, total.ops, total.firstErr)
	}
	return total, nil
}

// latencyRow formats a timed run as a table row after its leading cells.
func latencyRow(lead []string, s runStats) []string {
	sum := s.lat.Summary()
	return append(lead,
		fmtPct(s.hitRatio()),
		fmtDur(sum.P50), fmtDur(sum.P90), fmtDur(sum.P99), fmtDur(sum.P999),
		fmtRate(s.throughput()),
	)
}

// latencyColumns are the column names matching latencyRow.
func latencyColumns(lead ...string) []string {
	return append(lead, "hit ratio", "p50", "p90", "p99", "p99.9", "throughput")
}

// benchOf returns a benchmark line for a timed run.
func benchOf(name string, s runStats) Bench {
	sum := s.lat.Summary()
	return Bench{Name: name, N: s.ops, Metrics: []Metric{
		{float64(sum.Mean.Nanoseconds()), "ns/op"},
		{float64(sum.P99.Nanoseconds()), "p99-ns"},
		{s.hitRatio(), "hit-ratio"},
		{s.throughput(), "ops/s"},
	}}
}
