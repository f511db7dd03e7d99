package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/trace"
	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tracking"
)

// DefaultTraceSizes are the cache sizes, in entries, of replays of a trace
// with no sizes of its own; they include 32,768, the ARC paper's anchor
// for P3.
const DefaultTraceSizes = "4096,16384,32768,131072"

// sharedTraces are the traces in DefaultTraceDir replayed by default, with
// the sizes their published or customary figures use.
var sharedTraces = []struct{ file, sizes string }{
	{"P3.lis.zst", "4096,16384,32768,131072"},
	{"web07.trace.xz", "1000,2000,5000"},
}

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
	for _, t := range sharedTraces {
		p := filepath.Join(DefaultTraceDir, t.file)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// traceSizes returns the replay sizes of the trace at path.
func (c Config) traceSizes(path string, info trace.Info) ([]int, error) {
	list := c.TraceSizes
	if list == "" {
		list = DefaultTraceSizes
		for _, t := range sharedTraces {
			if filepath.Base(path) == t.file {
				list = t.sizes
			}
		}
	}
	return parseSizes(list, int(info.Unique), "--trace-sizes")
}

// workloadDefinitions say what each key distribution is, for --help and
// the tables' notes.
var workloadDefinitions = map[string]string{
	workload.Zipfian:          "zipfian: key i (0 the most popular) is drawn with probability ∝ 1/(i+1)^θ (YCSB's zipfian generator), so the hot keys are the low ones",
	workload.ScrambledZipfian: "scrambled: YCSB's scrambled zipfian: a zipfian rank (over 10^10 items at θ=0.99, as YCSB does) hashed with FNV-1a onto the keys, so the hot keys are spread over the key space and the skew is a little flatter than zipfian's",
	workload.Uniform:          "uniform: every key equally likely",
	workload.Hotspot:          "hotspot: 80 % of accesses go to a hot set of 20 % of the keys, uniform within the hot and the cold set (YCSB's hotspot)",
}

// WorkloadHelp describes every key distribution, one line each.
func WorkloadHelp() []string {
	var out []string
	for _, w := range []string{workload.Zipfian, workload.ScrambledZipfian, workload.Uniform, workload.Hotspot} {
		out = append(out, workloadDefinitions[w])
	}
	return out
}

// hitRatio replays each synthetic workload and each trace through the
// simulated peers and through tiered.Cache itself, at every size, then
// times read-through runs per policy and per thermos layout (layouts.go).
func hitRatio(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioHitRatio, Title: "hitratio: hit ratio by cache size and eviction policy"}
	sizes, err := c.sizes()
	if err != nil {
		return nil, err
	}
	pols, err := c.selectedMemoryPolicies()
	if err != nil {
		return nil, err
	}
	// Traces are checked first, so a bad one stops the run before minutes
	// of replays.
	type traceRun struct {
		path  string
		f     trace.Format
		info  trace.Info
		sizes []int
	}
	var runs []traceRun
	traces := c.Traces
	if traces == nil {
		traces = defaultTraces()
		if len(traces) == 0 {
			sec.Notes = append(sec.Notes, "no trace replayed: "+DefaultTraceDir+" has none of the shared traces (P3 and web07 live beside the repository, not in it; use --trace FILE)")
		}
	}
	for _, t := range traces {
		path, f, err := splitTrace(t)
		if err != nil {
			return nil, fmt.Errorf("%w: --trace %q: %v", ErrConfig, t, err)
		}
		p.Step("checking "+filepath.Base(path)+" (format, accesses, distinct keys)", 0, "")
		info, err := trace.Scan(path, f, int64(c.TraceLimit))
		if err != nil {
			return nil, fmt.Errorf("%w: --trace %s: %w", ErrConfig, path, err)
		}
		tsizes, err := c.traceSizes(path, info)
		if err != nil {
			return nil, err
		}
		runs = append(runs, traceRun{path, info.Format, info, tsizes})
	}

	used := map[string]bool{}
	for wi, w := range c.Workloads {
		gen, err := workload.New(c.spec(w), workload.Seed(c.Seed, 100+wi))
		if err != nil {
			return nil, err
		}
		stream := make([]uint64, c.Ops)
		distinct := map[uint64]struct{}{}
		for i := range stream {
			stream[i] = gen.Next()
			distinct[stream[i]] = struct{}{}
		}
		info := trace.Info{Accesses: int64(len(stream)), Unique: int64(len(distinct))}
		title, bname := fmt.Sprintf("%s (θ=%g)", w, c.Theta), fmt.Sprintf("%s_theta%g", w, c.Theta)
		if w == workload.Uniform || w == workload.Hotspot {
			title, bname = w, w
		}
		sims, err := buildSims(ctx, c, e, sizes, pols, nil)
		if err != nil {
			return nil, err
		}
		p.Step(fmt.Sprintf("workload %s through %d caches", w, len(sims)), info.Accesses, "accesses")
		err = feed(ctx, sims, sliceSource(stream), p.Set)
		if cerr := closeSims(sims); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		used[w] = true
		addSweep(sec, sweepSpec{name: "workload " + title, bname: bname, what: fmt.Sprintf("%d accesses over %d keys", c.Ops, c.Keys),
			keys: c.Keys, info: info}, sizes, sims)
	}
	for _, w := range c.Workloads {
		if used[w] {
			sec.Notes = append(sec.Notes, "workload "+workloadDefinitions[w])
		}
	}

	for _, tr := range runs {
		base := filepath.Base(tr.path)
		var diskSizes []int
		switch c.DiskReplay {
		case DiskReplaySmallest:
			diskSizes = tr.sizes[:1]
		case DiskReplayAll:
			diskSizes = tr.sizes
		}
		sims, err := buildSims(ctx, c, e, tr.sizes, pols, diskSizes)
		if err != nil {
			return nil, err
		}
		p.Step(fmt.Sprintf("replaying %s through %d caches", base, len(sims)), tr.info.Accesses, "accesses")
		n, err := replayTrace(ctx, tr.path, tr.f, int64(c.TraceLimit), sims, p.Set)
		if cerr := closeSims(sims); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("bench: trace %s: %w", tr.path, err)
		}
		what := fmt.Sprintf("%d accesses (%s)", n, tr.f)
		if c.TraceLimit > 0 && n == int64(c.TraceLimit) {
			what += fmt.Sprintf(", the first %d only (--trace-limit)", c.TraceLimit)
		}
		addSweep(sec, sweepSpec{name: "trace " + base, bname: base, what: what, info: tr.info, durations: true}, tr.sizes, sims)
		for _, a := range anchors() {
			if a.file != base || c.TraceLimit > 0 && n == int64(c.TraceLimit) {
				continue
			}
			for _, s := range sims {
				if s.name == a.policy && s.size == a.size {
					sec.Notes = append(sec.Notes, fmt.Sprintf("%s %s at %d entries: %.2f %% measured, %.2f %% published (%s)",
						a.file, a.policy, a.size, 100*s.ratio(), a.pct, a.source))
				}
			}
		}
	}
	sec.Notes = append(sec.Notes,
		"columns lru, 2q, arc (golang-lru) and otter are simulations: the library's cache keyed by the integer, demand fill on a miss, bounded by entries",
		fmt.Sprintf("columns thermos <policy> replay through a real tiered.Cache (one memory route; Get, and Set on a miss), its memory budget sized to N entries: N × (tracking.EntryOverhead %d + key %d + value %d bytes); the memory tier shards that budget, so it may hold a little under N entries; +disk adds the disk tier with no disk budget, so it holds every key replayed",
			tracking.EntryOverhead, replayKeyLen, replayValueLen),
		"bound: 1 − distinct keys / accesses, the best any cache that starts empty can do (every first access misses)")

	if err := policyLatency(ctx, c, sec, p); err != nil {
		return nil, err
	}
	if err := layoutLatency(ctx, c, e, sec, p); err != nil {
		return nil, err
	}
	return sec, nil
}

// buildSims returns the replays of one workload or trace, in table column
// order: every simulated peer policy and every thermos memory policy at
// every size, then thermos memory+disk with the first memory policy at
// diskSizes.
func buildSims(ctx context.Context, c Config, e *env, sizes []int, pols []tracking.Policy, diskSizes []int) ([]*sim, error) {
	var sims []*sim
	fail := func(err error) ([]*sim, error) {
		_ = closeSims(sims)
		return nil, err
	}
	for _, pol := range c.SimPolicies {
		for _, sz := range sizes {
			s, err := newSim(pol, sz)
			if err != nil {
				return fail(err)
			}
			sims = append(sims, s)
		}
	}
	for _, pol := range pols {
		for _, sz := range sizes {
			s, err := newThermosSim(ctx, pol, sz, false, e.logger)
			if err != nil {
				return fail(err)
			}
			sims = append(sims, s)
		}
	}
	if len(pols) > 0 {
		for _, sz := range diskSizes {
			s, err := newThermosSim(ctx, pols[0], sz, true, e.logger)
			if err != nil {
				return fail(err)
			}
			sims = append(sims, s)
		}
	}
	return sims, nil
}

// closeSims closes every sim and returns the first error.
func closeSims(sims []*sim) error {
	var first error
	for _, s := range sims {
		if s.held != nil {
			s.heldAtEnd = s.held()
		}
		if err := s.close(); err != nil && first == nil {
			first = fmt.Errorf("bench: close %s: %w", s.name, err)
		}
	}
	return first
}

// sweepSpec describes one workload's or trace's sweep table.
type sweepSpec struct {
	name, bname, what string
	keys              int        // > 0: a column with each size as a share of it
	info              trace.Info // accesses and distinct keys, for the bound
	durations         bool       // add a table of each replay's duration
}

// addSweep adds a hit-ratio table (and, for traces, a table of replay
// durations), a curve and benchmark lines for one workload or trace.
func addSweep(sec *Section, sp sweepSpec, sizes []int, sims []*sim) {
	var names []string
	for _, s := range sims {
		if len(names) == 0 || names[len(names)-1] != s.name {
			names = append(names, s.name)
		}
	}
	bound := 1 - sp.info.CompulsoryMissRatio()
	cols := []string{"entries"}
	if sp.keys > 0 {
		cols = append(cols, "of keys")
	}
	cols = append(append(cols, names...), "bound")
	t := Table{Title: fmt.Sprintf("hit ratio, %s: %s, %d distinct keys, bound %s", sp.name, sp.what, sp.info.Unique, fmtPct(bound)), Columns: cols}
	dt := Table{Title: fmt.Sprintf("replay time, %s (one cache alone; thermos: and entries held at the end)", sp.name), Columns: append([]string{"entries"}, names...)}
	ch := Chart{Title: "hit ratio, " + sp.name, Kind: LineChart, XLabel: "cache size (entries, log scale)", YLabel: "hit ratio (%)", LogX: true}
	byName := map[string]int{}
	for i, n := range names {
		byName[n] = i
		ch.Series = append(ch.Series, Series{Name: n})
	}
	for _, sz := range sizes {
		row := []string{strconv.Itoa(sz)}
		if sp.keys > 0 {
			row = append(row, fmtPct(float64(sz)/float64(sp.keys)))
		}
		drow := []string{strconv.Itoa(sz)}
		for _, n := range names {
			found := false
			for _, s := range sims {
				if s.name != n || s.size != sz {
					continue
				}
				found = true
				row = append(row, fmtPct(s.ratio()))
				d := fmtDur(s.elapsed.Round(time.Millisecond))
				if s.held != nil {
					d += fmt.Sprintf(", %d held", s.heldAtEnd)
				}
				drow = append(drow, d)
				sr := &ch.Series[byName[n]]
				sr.Points = append(sr.Points, Point{X: float64(sz), Y: 100 * s.ratio()})
				sec.Bench = append(sec.Bench, Bench{
					Name:    fmt.Sprintf("HitRatio/%s/%s/size=%d", benchName(sp.bname), benchName(s.name), sz),
					N:       s.n,
					Metrics: []Metric{{s.ratio(), "hit-ratio"}, {float64(s.elapsed.Nanoseconds()) / float64(max(s.n, 1)), "ns/access"}},
				})
			}
			if !found { // replayed at other sizes only (--disk-replay)
				row, drow = append(row, "—"), append(drow, "—")
			}
		}
		t.Rows = append(t.Rows, append(row, fmtPct(bound)))
		dt.Rows = append(dt.Rows, drow)
	}
	sec.add(t, ch)
	if sp.durations {
		sec.add(dt)
	}
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
