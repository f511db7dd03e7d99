package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tracking"
)

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
	ch := Chart{Title: "memory-only read-through latency", Kind: BarChart, XLabel: "policy", YLabel: "latency (µs, log scale)", LogY: true}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, pol := range c.SimPolicies {
		o := &origin{size: c.ValueSize}
		l, closeFn, err := newLocal(pol, size)
		if err != nil {
			return err
		}
		tg := &readThrough{name: pol, l: l, b: o, closeFn: closeFn}
		p.Timed("memory-only read-through, "+pol, c.Duration)
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
	sec.add(t, ch)
	return nil
}

// layoutName is the name of the layout of tiers among Layouts, or "".
func layoutName(tiers tiered.Tier) string {
	for _, l := range Layouts() {
		if l.Tiers == tiers {
			return l.Name
		}
	}
	return ""
}

// layoutSaturation is the goroutines per processor of each layout's
// second timed run, enough to keep every core busy with memory+redis's
// round trips in flight (its throughput stops growing near 32 per
// processor on 2 cores).
const layoutSaturation = 32

// layoutWarmShare is how full a layout's memory tier must be before its
// timed run starts.
const layoutWarmShare = 0.95

// layoutWarmReads is how many warm-up reads per key of the workload every
// layout makes before its timed run, and layoutWarmLimit bounds the
// warm-up, in timed runs' durations.
const (
	layoutWarmReads = 10
	layoutWarmLimit = 10
)

// layoutLatency measures each thermos layout like policyLatency measures
// the policies: same workload, same entry budget, same in-process origin as
// the loader. Redis starts empty for each layout (its keys carry a prefix
// unique to the run and layout), so a memory miss is answered by Redis
// once some process loaded the key, and by the origin before that.
//
// Each layout is warmed with the same workload until its memory tier
// holds layoutWarmShare of its budget's entries and it has made at least
// layoutWarmReads reads per key of the workload (--keys) before it is
// timed: the
// layouts run at throughputs ten times apart, so a fixed-length run from
// a cold start would give the slow ones mostly cold-start misses (and a
// disk tier no evictions to serve) and compare cold starts, not layouts.
// The read count makes the warm-up the same for every layout: stopping at
// a full memory alone warmed memory-only with its first time slice of
// reads (about 100,000) and memory+redis with a tenth of that, so Redis,
// the tier that outlives the process, still lacked most of the keys the
// timed run then read, and memory+redis was timed on first loads (three
// round trips and a lease each; ~10 % of its reads at 20,000 keys, against
// ~1 % after this warm-up) where memory-only was timed on its in-process
// origin.
func layoutLatency(ctx context.Context, c Config, e *env, sec *Section, p *progress) error {
	mix, err := workload.MixByName(c.Mix)
	if err != nil {
		return err
	}
	size := max(1, int(DefaultCacheShare*float64(c.Keys)))
	sat := c
	sat.Goroutines = layoutSaturation * runtime.GOMAXPROCS(0)
	satCol := fmt.Sprintf("throughput at %d goroutines", sat.Goroutines)
	t := Table{
		Title: fmt.Sprintf("thermos layouts, zipfian θ=%g, YCSB %s, memory budget for %d entries (%s of keys), %d goroutines, warmed until memory holds %.0f %% of them and %d reads per key were made, then %v each",
			c.Theta, mix.Name, size, fmtPct(DefaultCacheShare), c.goroutines(), 100*layoutWarmShare, layoutWarmReads, c.Duration),
		Columns: append(latencyColumns("layout"), satCol, "memory", "disk", "redis", "origin loads", "warm-up reads", "memory entries", "memory bytes/entry"),
	}
	// Throughputs of the timed runs, by layout name: at c.goroutines()
	// and at sat.Goroutines.
	rates, satRates := map[string]float64{}, map[string]float64{}
	// latencyColumns puts "hit ratio" (local: memory and disk) first.
	ch := Chart{Title: "thermos layouts: share of reads per tier", Kind: BarChart, XLabel: "layout", YLabel: "reads (%)"}
	shares := []Series{{Name: "memory"}, {Name: "disk"}, {Name: "redis"}, {Name: "origin"}}
	lat := Chart{Title: "thermos layouts: latency", Kind: BarChart, XLabel: "layout", YLabel: "latency (µs, log scale)", LogY: true}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, l := range Layouts() {
		if l.Tiers&tiered.Redis != 0 && e.redis == nil {
			t.Rows = append(t.Rows, append([]string{l.Name, "skipped: no Redis"}, make([]string, len(t.Columns)-2)...))
			continue
		}
		prefix := fmt.Sprintf("bench:t:%s:%d:", e.token, i)
		keys := prefixedKeys(prefix, c.Keys)
		o := &origin{size: c.ValueSize}
		tg, err := openThermos(ctx, e, thermosSpec{layout: l, prefix: prefix, entries: size,
			keyLen: len(keys[len(keys)-1]), valueSize: c.ValueSize}, originLoader(o))
		if err != nil {
			return err
		}
		p.Timed(l.Name+" (warm-up)", layoutWarmLimit*c.Duration)
		warm, err := warmUntilFull(ctx, tg, keys, c, mix, int(layoutWarmShare*float64(size)), layoutWarmReads*int64(c.Keys), layoutWarmLimit*c.Duration, 50+i)
		if err != nil {
			tg.Close()
			return err
		}
		if held := tg.c.Stats().MemoryEntries; held < int(layoutWarmShare*float64(size)) {
			sec.Warnings = append(sec.Warnings, fmt.Sprintf("%s: memory held %d of %d entries after %d warm-up reads in %v: its hit ratio still includes cold-start misses",
				l.Name, held, size, warm, layoutWarmLimit*c.Duration))
		} else if want := layoutWarmReads * int64(c.Keys); warm < want {
			sec.Warnings = append(sec.Warnings, fmt.Sprintf("%s: only %d warm-up reads in %v, fewer than the %d every layout should have: its timed run includes more first loads",
				l.Name, warm, layoutWarmLimit*c.Duration, want))
		}
		loadsBefore := o.loads.Load()
		p.Timed(l.Name, c.Duration)
		st, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), mix, c.Duration, 30+i)
		ms := tg.c.Stats()
		loads := o.loads.Load() - loadsBefore
		var stSat runStats
		if err == nil {
			// The same warm cache again with enough goroutines to keep the
			// cores busy: what the layout can serve, where the run above,
			// at few goroutines, waits on its round trips.
			p.Timed(fmt.Sprintf("%s (%d goroutines)", l.Name, sat.Goroutines), c.Duration)
			stSat, err = runTimed(ctx, tg, keys, sat, sat.spec(workload.Zipfian), mix, c.Duration, 70+i)
		}
		tg.Close()
		if err != nil {
			return err
		}
		rates[l.Name], satRates[l.Name] = st.throughput(), stSat.throughput()
		perEntry := ""
		if ms.MemoryEntries > 0 {
			perEntry = strconv.FormatInt(ms.MemoryBytes/int64(ms.MemoryEntries), 10)
		}
		t.Rows = append(t.Rows, append(latencyRow([]string{l.Name}, st), fmtRate(stSat.throughput()),
			st.tierShare(TierMemory), st.tierShare(TierDisk), st.tierShare(TierRedis), strconv.FormatInt(loads, 10),
			strconv.FormatInt(warm, 10), strconv.Itoa(ms.MemoryEntries), perEntry))
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
		bs := benchOf("Layout/"+benchName(l.Name)+"/saturated", stSat)
		bs.Metrics = append(bs.Metrics, Metric{float64(sat.Goroutines), "goroutines"})
		sec.Bench = append(sec.Bench, bs)
	}
	if m, mr := layoutName(tiered.Memory), layoutName(tiered.Memory|tiered.Redis); rates[m] > 0 && rates[mr] > 0 && satRates[mr] > 0 {
		sec.Notes = append(sec.Notes, fmt.Sprintf("%s ÷ %s throughput: %.1f× at %d goroutines, %.1f× at %d: with few goroutines each of the reads Redis answers waits a round trip, so the ratio measures latency; with enough goroutines to keep the cores busy it measures what each layout can serve",
			m, mr, rates[m]/rates[mr], c.goroutines(), satRates[m]/satRates[mr], sat.Goroutines))
	}
	sec.Notes = append(sec.Notes,
		"thermos layouts: hit ratio counts memory and disk hits (local); memory/disk/redis are the shares of reads each tier answered (tiered.Cache.Stats); origin loads are loader calls during the timed run",
		fmt.Sprintf("what each layout stores per entry: memory: the key and the value in the memory tier, charged tracking.EntryOverhead (%d B) + key + value against the budget (memory bytes/entry is the charge measured at the end); memory+redis: the same in memory, and in Redis the value in an envelope (a %d-byte header: expiries, rebuild time, version, checksum) with Redis's own per-key overhead; memory+disk+redis: also the enveloped value in Pebble under the key, written behind on every fill, so a read that memory evicted is served by the disk",
			tracking.EntryOverhead, envelopeHeader),
		"the layouts share the memory budget and the workload, so once warm their memory hit ratios are alike; a disk tier adds the reads memory evicted, a Redis tier adds the round trips (and the loads' lease scripts) that cost its throughput")
	if len(p50.Points) > 0 {
		ch.Series = shares
		lat.Series = []Series{p50, p99}
		sec.add(t, ch, lat)
	} else {
		sec.add(t)
	}
	return nil
}

// envelopeHeader is the size of an unsigned envelope's header (package
// internal/envelope's HeaderSize), for the notes.
const envelopeHeader = 38

// warmUntilFull reads keys drawn from the zipfian workload through tg with
// c.goroutines() goroutines until tg's memory tier holds want entries and
// at least minReads reads were made, or limit passes, and returns how many
// reads it took.
func warmUntilFull(ctx context.Context, tg *thermosTarget, keys []string, c Config, mix workload.Mix, want int, minReads int64, limit time.Duration, stream int) (int64, error) {
	var reads int64
	deadline := time.Now().Add(limit)
	step := max(limit/30, 10*time.Millisecond)
	for iter := 0; (tg.c.Stats().MemoryEntries < want || reads < minReads) && time.Now().Before(deadline); iter++ {
		// A new stream each slice: replaying one slice's keys again would
		// add no new entries.
		st, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), mix, step, stream*100+iter)
		if err != nil {
			return reads, err
		}
		reads += st.reads
	}
	return reads, ctx.Err()
}
