package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
)

// DefaultTraceSizes are the cache sizes, in entries, of trace replays; they
// include 32,768, the ARC paper's anchor for P3.
const DefaultTraceSizes = "4096,16384,32768,131072"

// paperAnchor is a published hit ratio for a trace at one size.
type paperAnchor struct {
	file   string
	size   int
	policy string
	pct    float64
	source string
}

// anchors are the published figures a replay is checked against.
func anchors() []paperAnchor {
	return []paperAnchor{
		{"P3.lis.zst", 32768, PolicyLRU, 3.57, "ARC paper (Megiddo & Modha, FAST 2003)"},
		{"P3.lis.zst", 32768, PolicyARC, 17.12, "ARC paper; golang-lru's ARC is its own implementation"},
	}
}

// defaultTraces returns the shared traces that exist under DefaultTraceDir.
func defaultTraces() []string {
	var out []string
	for _, n := range []string{"P3.lis.zst", "web07.trace.xz"} {
		p := filepath.Join(DefaultTraceDir, n)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// hitRatio runs the size sweep and the policy comparison on synthetic
// workloads and traces, then a timed read-through run per policy and per
// thermos layout (memory-only, memory+Redis, memory+disk+Redis) for
// latency, throughput and, for thermos, the share of reads each tier
// answered.
func hitRatio(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioHitRatio, Title: "hitratio: hit ratio by cache size and eviction policy"}
	sizes, err := c.sizes()
	if err != nil {
		return nil, err
	}
	for wi, w := range c.Workloads {
		gen, err := workload.New(c.spec(w), workload.Seed(c.Seed, 100+wi))
		if err != nil {
			return nil, err
		}
		stream := make([]uint64, c.Ops)
		for i := range stream {
			stream[i] = gen.Next()
		}
		title, bname := fmt.Sprintf("%s (θ=%g)", w, c.Theta), fmt.Sprintf("%s_theta%g", w, c.Theta)
		if w == workload.Uniform || w == workload.Hotspot {
			title, bname = w, w
		}
		sims, err := sweep(ctx, sizes, func(s []*sim) error {
			return feed(s, sliceSource(stream))
		})
		if err != nil {
			return nil, err
		}
		p.Printf("hitratio: %s done", w)
		addSweep(sec, "workload "+title, bname, fmt.Sprintf("%d accesses over %d keys", c.Ops, c.Keys), sizes, c.Keys, sims)
	}

	traces := c.Traces
	if traces == nil {
		traces = defaultTraces()
		if len(traces) == 0 {
			sec.Notes = append(sec.Notes, "no trace replayed: "+DefaultTraceDir+" has none of the shared traces (use --trace FILE)")
		}
	}
	tsizes, err := Config{Keys: 1, Sizes: DefaultTraceSizes}.sizes()
	if err != nil {
		return nil, err
	}
	for _, t := range traces {
		path, f, err := splitTrace(t)
		if err != nil {
			return nil, fmt.Errorf("%w: --trace %q: %v", ErrConfig, t, err)
		}
		var n int
		sims, err := sweep(ctx, tsizes, func(s []*sim) error {
			var err error
			n, err = replayTrace(path, f, c.TraceLimit, s, func(n int) {
				p.Printf("hitratio: replaying %s: %d accesses", filepath.Base(path), n)
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("bench: trace %s: %w", path, err)
		}
		what := fmt.Sprintf("%d accesses", n)
		if c.TraceLimit > 0 && n == c.TraceLimit {
			what += fmt.Sprintf(" (first %d only: --trace-limit)", c.TraceLimit)
		}
		addSweep(sec, "trace "+filepath.Base(path), filepath.Base(path), what, tsizes, 0, sims)
		for _, a := range anchors() {
			if a.file != filepath.Base(path) || c.TraceLimit > 0 && n == c.TraceLimit {
				continue
			}
			for _, s := range sims {
				if s.policy == a.policy && s.size == a.size {
					sec.Notes = append(sec.Notes, fmt.Sprintf("%s %s at %d entries: %.2f %% measured, %.2f %% published (%s)",
						a.file, a.policy, a.size, 100*s.ratio(), a.pct, a.source))
				}
			}
		}
	}

	if err := policyLatency(ctx, c, sec, p); err != nil {
		return nil, err
	}
	if err := layoutLatency(ctx, c, e, sec, p); err != nil {
		return nil, err
	}
	return sec, nil
}

// sizedSim is a sim with its policy and size.
type sizedSim struct {
	*sim
	policy string
	size   int
}

// sweep builds a sim for every policy × size, lets feed drive them all, and
// closes them.
func sweep(ctx context.Context, sizes []int, feed func([]*sim) error) ([]sizedSim, error) {
	var all []sizedSim
	var raw []*sim
	defer func() {
		for _, s := range raw {
			s.close()
		}
	}()
	for _, pol := range policies() {
		for _, sz := range sizes {
			s, err := newSim(pol, sz)
			if err != nil {
				return nil, err
			}
			all = append(all, sizedSim{s, pol, sz})
			raw = append(raw, s)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return all, feed(raw)
}

// addSweep adds a hit-ratio table, curve and benchmark lines for one
// workload or trace. keys > 0 adds a column with each size as a share.
func addSweep(sec *Section, name, bname, what string, sizes []int, keys int, sims []sizedSim) {
	cols := []string{"entries"}
	if keys > 0 {
		cols = append(cols, "of keys")
	}
	cols = append(cols, policies()...)
	t := Table{Title: fmt.Sprintf("hit ratio, %s: %s", name, what), Columns: cols}
	ch := Chart{Title: "hit ratio, " + name, Kind: LineChart, XLabel: "cache size (entries, log scale)", YLabel: "hit ratio (%)", LogX: true}
	ch.Series = make([]Series, len(policies()))
	byPolicy := map[string]*Series{}
	for i, pol := range policies() {
		ch.Series[i].Name = pol
		byPolicy[pol] = &ch.Series[i] // ch.Series is never appended to again
	}
	for _, sz := range sizes {
		row := []string{strconv.Itoa(sz)}
		if keys > 0 {
			row = append(row, fmtPct(float64(sz)/float64(keys)))
		}
		for _, pol := range policies() {
			for _, s := range sims {
				if s.policy == pol && s.size == sz {
					row = append(row, fmtPct(s.ratio()))
					sr := byPolicy[pol]
					sr.Points = append(sr.Points, Point{X: float64(sz), Y: 100 * s.ratio()})
					sec.Bench = append(sec.Bench, Bench{
						Name:    fmt.Sprintf("HitRatio/%s/%s/size=%d", benchName(bname), pol, sz),
						N:       s.n,
						Metrics: []Metric{{s.ratio(), "hit-ratio"}},
					})
				}
			}
		}
		t.Rows = append(t.Rows, row)
	}
	sec.Tables = append(sec.Tables, t)
	sec.Charts = append(sec.Charts, ch)
}

// benchName makes s usable inside a benchmark name (no spaces).
func benchName(s string) string {
	out := []rune{}
	for _, r := range s {
		switch r {
		case ' ', '\t', '(', ')', '=', '/':
			if len(out) > 0 && out[len(out)-1] != '_' {
				out = append(out, '_')
			}
		default:
			out = append(out, r)
		}
	}
	for len(out) > 0 && out[len(out)-1] == '_' {
		out = out[:len(out)-1]
	}
	return string(out)
}

// policyLatency measures each policy as a read-through cache in front of an
// in-process origin (the memory-only layout of today's caches): hit ratio,
// origin loads and latency percentiles under concurrency.
func policyLatency(ctx context.Context, c Config, sec *Section, p *progress) error {
	mix, err := workload.MixByName(c.Mix)
	if err != nil {
		return err
	}
	size := max(1, int(DefaultCacheShare*float64(c.Keys)))
	keys := keyNames(c.Keys)
	t := Table{
		Title:   fmt.Sprintf("memory-only read-through, zipfian θ=%g, YCSB %s, %d entries (%s of keys), %d goroutines, %v each", c.Theta, mix.Name, size, fmtPct(DefaultCacheShare), c.goroutines(), c.Duration),
		Columns: append(latencyColumns("policy"), "origin loads"),
	}
	ch := Chart{Title: "memory-only read-through latency", Kind: BarChart, XLabel: "policy", YLabel: "latency (µs)"}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, pol := range policies() {
		o := &origin{size: c.ValueSize}
		l, closeFn, err := newLocal(pol, size)
		if err != nil {
			return err
		}
		tg := &readThrough{name: pol, l: l, b: o, closeFn: closeFn}
		p.Printf("hitratio: timing %s", pol)
		st, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), mix, c.Duration, 10+i)
		tg.Close()
		if err != nil {
			return err
		}
		t.Rows = append(t.Rows, append(latencyRow([]string{pol}, st), strconv.FormatInt(o.loads.Load(), 10)))
		sum := st.lat.Summary()
		p50.Points = append(p50.Points, Point{Label: pol, Y: float64(sum.P50) / 1e3})
		p99.Points = append(p99.Points, Point{Label: pol, Y: float64(sum.P99) / 1e3})
		sec.Bench = append(sec.Bench, benchOf("MemoryOnly/"+pol, st))
	}
	ch.Series = []Series{p50, p99}
	sec.Tables = append(sec.Tables, t)
	sec.Charts = append(sec.Charts, ch)
	return nil
}

// layoutLatency measures each thermos layout like policyLatency measures
// the policies: same workload, same entry budget, same in-process origin as
// the loader. Redis starts empty for each layout (its keys carry a prefix
// unique to the run and layout), so a memory miss is answered by Redis
// once some process loaded the key, and by the origin before that.
func layoutLatency(ctx context.Context, c Config, e *env, sec *Section, p *progress) error {
	mix, err := workload.MixByName(c.Mix)
	if err != nil {
		return err
	}
	size := max(1, int(DefaultCacheShare*float64(c.Keys)))
	t := Table{
		Title: fmt.Sprintf("thermos layouts, zipfian θ=%g, YCSB %s, memory budget for %d entries (%s of keys), %d goroutines, %v each, Redis empty at start",
			c.Theta, mix.Name, size, fmtPct(DefaultCacheShare), c.goroutines(), c.Duration),
		Columns: append(latencyColumns("layout"), "memory", "disk", "redis", "origin loads"),
	}
	// latencyColumns puts "hit ratio" (local: memory and disk) first.
	ch := Chart{Title: "thermos layouts: share of reads per tier", Kind: BarChart, XLabel: "layout", YLabel: "reads (%)"}
	shares := []Series{{Name: "memory"}, {Name: "disk"}, {Name: "redis"}, {Name: "origin"}}
	lat := Chart{Title: "thermos layouts: latency", Kind: BarChart, XLabel: "layout", YLabel: "latency (µs)"}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, l := range Layouts() {
		if l.Tiers&tiered.Redis != 0 && e.redis == nil {
			t.Rows = append(t.Rows, append([]string{l.Name, "skipped: no Redis"}, make([]string, len(t.Columns)-2)...))
			continue
		}
		p.Printf("hitratio: timing %s", l.Name)
		prefix := fmt.Sprintf("bench:t:%s:%d:", e.token, i)
		keys := prefixedKeys(prefix, c.Keys)
		o := &origin{size: c.ValueSize}
		tg, err := openThermos(ctx, e, thermosSpec{layout: l, prefix: prefix, entries: size,
			keyLen: len(keys[len(keys)-1]), valueSize: c.ValueSize}, originLoader(o))
		if err != nil {
			return err
		}
		st, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), mix, c.Duration, 30+i)
		tg.Close()
		if err != nil {
			return err
		}
		loads := o.loads.Load()
		t.Rows = append(t.Rows, append(latencyRow([]string{l.Name}, st),
			st.tierShare(TierMemory), st.tierShare(TierDisk), st.tierShare(TierRedis), strconv.FormatInt(loads, 10)))
		for j, tier := range []string{TierMemory, TierDisk, TierRedis} {
			shares[j].Points = append(shares[j].Points, Point{Label: l.Name, Y: 100 * float64(st.tiers[tier]) / float64(max(st.reads, 1))})
		}
		shares[3].Points = append(shares[3].Points, Point{Label: l.Name, Y: 100 * float64(loads) / float64(max(st.reads, 1))})
		sum := st.lat.Summary()
		p50.Points = append(p50.Points, Point{Label: l.Name, Y: float64(sum.P50) / 1e3})
		p99.Points = append(p99.Points, Point{Label: l.Name, Y: float64(sum.P99) / 1e3})
		b := benchOf("Layout/"+benchName(l.Name), st)
		b.Metrics = append(b.Metrics, Metric{float64(loads), "origin-loads"})
		sec.Bench = append(sec.Bench, b)
	}
	sec.Notes = append(sec.Notes, "thermos layouts: hit ratio counts memory and disk hits (local); memory/disk/redis are the shares of reads each tier answered (tiered.Cache.Stats); origin loads are loader calls")
	if len(p50.Points) > 0 {
		ch.Series = shares
		lat.Series = []Series{p50, p99}
		sec.Charts = append(sec.Charts, ch, lat)
	}
	sec.Tables = append(sec.Tables, t)
	return nil
}
