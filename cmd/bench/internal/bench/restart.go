package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
)

// MaxRestartKeys bounds Config.Keys for the restart scenario, which warms
// every key into memory, disk and Redis.
const MaxRestartKeys = 1_000_000

// restartBucket is the width of the restart scenario's time series.
const restartBucket = 100 * time.Millisecond

// restartStart is one way a process can come back.
type restartStart struct {
	name    string
	sameDir bool // reopen the warmed directory
	sameKey bool // read the keys Redis still holds
}

func restartStarts() []restartStart {
	return []restartStart{
		{name: "warm (disk and Redis)", sameDir: true, sameKey: true},
		{name: "no disk (Redis warm)", sameKey: true},
		{name: "cold (nothing cached)"},
	}
}

// restartRun is what one start measured.
type restartRun struct {
	open      time.Duration // tiered.Open, warm-up from disk included
	firstHit  time.Duration // from Open's start to the first read answered by memory or disk; -1: none
	buckets   []restartCounts
	total     restartCounts
	loads     int64 // origin calls
	warmed    int64 // entries loaded from disk by Open
	revalPass time.Duration
}

// restartCounts are reads by where they were answered.
type restartCounts struct {
	reads, local, redis, loader int64
}

func (a *restartCounts) add(b restartCounts) {
	a.reads += b.reads
	a.local += b.local
	a.redis += b.redis
	a.loader += b.loader
}

func (r restartCounts) localRatio() float64 {
	if r.reads == 0 {
		return 0
	}
	return float64(r.local) / float64(r.reads)
}

// restart warms a memory+disk+Redis cache with GetOrLoad, closes it, and
// compares three ways of coming back, each read by the same zipfian
// workload for 1.5×Duration after Open returns: reopening the warmed directory while Redis
// still holds the values, a fresh directory with Redis warm, and a cold
// start (fresh directory, keys Redis never saw).
func restart(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioRestart, Title: "restart: warm vs cold start of thermos memory+disk+redis"}
	if e.redis == nil {
		sec.Notes = append(sec.Notes, "skipped: needs Redis ("+e.redisDesc+")")
		return sec, nil
	}
	n := c.Keys
	window := c.Duration * 3 / 2
	bucket := min(restartBucket, window/10)
	dir, err := os.MkdirTemp("", "thermos-bench-restart-*")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	prefix := fmt.Sprintf("bench:r:%s:", e.token)
	keys := prefixedKeys(prefix, n)
	spec := func(dir string) thermosSpec {
		return thermosSpec{
			layout: Layout{Name: "thermos memory+disk+redis", Tiers: tiered.Memory | tiered.Disk | tiered.Redis},
			prefix: "bench:r:", entries: n + n/10 + 1000, // room for every key: shards fill unevenly
			keyLen: len(keys[n-1]), valueSize: c.ValueSize, dir: dir,
		}
	}

	p.Step(fmt.Sprintf("warming %d keys", n), int64(n), "keys")
	o := &origin{size: c.ValueSize}
	tg, err := openThermos(ctx, e, spec(dir), originLoader(o))
	if err != nil {
		return nil, err
	}
	if err := warmKeys(ctx, tg, keys, 4*c.goroutines(), p.Set); err != nil {
		tg.Close()
		return nil, err
	}
	if err := tg.Close(); err != nil {
		return nil, fmt.Errorf("bench: restart: close the warmed cache: %w", err)
	}

	t := Table{
		Title: fmt.Sprintf("%d keys (--keys) warmed with Set, closed, reopened; zipfian θ=%g reads by %d goroutines for %v; Unverified: Revalidate",
			n, c.Theta, c.goroutines(), window),
		Columns: []string{"start", "open", "warmed from disk", "first local hit", "local hit ratio", "hit ratio, first " + fmtDuration(window/3), "redis answers", "origin calls", "reads", "revalidation pass"},
	}
	hit := Chart{Title: "restart: local hit ratio over time", Kind: LineChart, XLabel: "time since Open (ms)", YLabel: "memory+disk hits (%)"}
	calls := Chart{Title: "restart: origin calls over time", Kind: LineChart, XLabel: "time since Open (ms)", YLabel: "origin calls per " + fmtDuration(bucket)}
	for i, s := range restartStarts() {
		p.Step(s.name+": opening", 0, "")
		d := dir
		if !s.sameDir {
			if d, err = os.MkdirTemp("", "thermos-bench-restart-*"); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
		}
		ks := keys
		if !s.sameKey {
			ks = prefixedKeys(fmt.Sprintf("bench:r:%s:cold%d:", e.token, i), n)
		}
		run, err := driveRestart(ctx, c, e, spec(d), ks, window, bucket, 70+i, func() { p.Timed(s.name+": reading", window) })
		if !s.sameDir {
			os.RemoveAll(d)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: restart %s: %w", s.name, err)
		}
		first := "none"
		if run.firstHit >= 0 {
			first = fmtDur(run.firstHit)
		}
		var early restartCounts // the first third of the window, from Open's start
		for _, b := range run.buckets[:min(len(run.buckets), int(window/3/bucket))] {
			early.add(b)
		}
		earlyCell := "no reads yet"
		if early.reads > 0 {
			earlyCell = fmtPct(early.localRatio())
		}
		reval := "—"
		if run.revalPass > 0 {
			reval = fmtDur(run.revalPass)
		}
		t.Rows = append(t.Rows, []string{s.name, fmtDur(run.open), strconv.FormatInt(run.warmed, 10), first,
			fmtPct(run.total.localRatio()), earlyCell, strconv.FormatInt(run.total.redis, 10),
			strconv.FormatInt(run.loads, 10), strconv.FormatInt(run.total.reads, 10), reval})
		hs, cs := Series{Name: s.name}, Series{Name: s.name}
		for j, b := range run.buckets {
			x := float64((time.Duration(j)*bucket + bucket/2).Milliseconds())
			if b.reads > 0 {
				hs.Points = append(hs.Points, Point{X: x, Y: 100 * b.localRatio()})
			}
			cs.Points = append(cs.Points, Point{X: x, Y: float64(b.loader)})
		}
		hit.Series = append(hit.Series, hs)
		calls.Series = append(calls.Series, cs)
		sec.Bench = append(sec.Bench, Bench{Name: "Restart/" + benchName(s.name), N: run.total.reads, Metrics: []Metric{
			{float64(run.open.Nanoseconds()), "open-ns"},
			{float64(run.firstHit.Nanoseconds()), "first-hit-ns"},
			{run.total.localRatio(), "hit-ratio"},
			{float64(run.loads), "origin-calls"},
		}})
	}
	sec.Notes = append(sec.Notes,
		"warm: entries come back from Pebble as unverified; a read of one not yet checked by the background revalidation pass costs one small round trip (Unverified: Revalidate), then it is a local hit",
		"local hit: answered by memory or disk (tiered.Sources); redis answers need no origin call; origin calls are loader calls",
		fmt.Sprintf("time series: %v buckets from the start of tiered.Open; origin calls per bucket count reads answered by a loader call (shared by waiters)", bucket))
	sec.add(t, hit, calls)
	return sec, nil
}

// warmKeys writes every key through Set (memory, disk and Redis, as a
// GetOrLoad that calls the loader would fill them, without the loader's
// lease round trips) with g goroutines, passing the count of keys claimed
// so far to tick every 1024 keys.
func warmKeys(ctx context.Context, tg *thermosTarget, keys []string, g int, tick func(int64)) error {
	var next atomic.Int64
	value := valueFor("warm", tg.valueSize)
	errs := make([]error, g)
	var wg sync.WaitGroup
	for w := range g {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				if i%1024 == 0 {
					tick(int64(i))
				}
				if err := tg.c.Set(ctx, keys[i], value, 0); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("bench: warm: %w", err)
		}
	}
	return ctx.Err()
}

// driveRestart opens a cache for spec, calls opened, reads keys with
// c.goroutines() goroutines for window once Open returns, and counts where
// every read was answered, per bucket of time since Open began.
func driveRestart(ctx context.Context, c Config, e *env, spec thermosSpec, keys []string, window, bucket time.Duration, stream int, opened func()) (restartRun, error) {
	g := c.goroutines()
	gens := make([]workload.Generator, g)
	for i := range gens {
		var err error
		gens[i], err = workload.New(workload.Spec{Distribution: workload.Zipfian, Keys: uint64(len(keys)), Theta: c.Theta}, workload.Seed(c.Seed, stream*1000+i))
		if err != nil {
			return restartRun{}, err
		}
	}
	o := &origin{size: c.ValueSize}
	start := time.Now()
	tg, err := openThermos(ctx, e, spec, originLoader(o))
	if err != nil {
		return restartRun{}, err
	}
	defer tg.Close()
	openTook := time.Since(start)
	opened()
	end := openTook + window // reads run for window after Open returns
	nb := int((end + bucket - 1) / bucket)
	run := restartRun{open: openTook, firstHit: -1, buckets: make([]restartCounts, nb), warmed: tg.c.Stats().Warmed}
	type result struct {
		buckets  []restartCounts
		firstHit time.Duration
		err      error
	}
	results := make([]result, g)
	var wg sync.WaitGroup
	for w := range g {
		wg.Go(func() {
			r := result{buckets: make([]restartCounts, nb), firstHit: -1}
			defer func() { results[w] = r }()
			for ctx.Err() == nil {
				at := time.Since(start)
				if at >= end {
					return
				}
				key := keys[gens[w].Next()]
				d := &tiered.Sources{}
				if _, _, err := tg.c.GetOrLoad(tiered.WithSources(ctx, d), key, tg.load); err != nil {
					r.err = err
					return
				}
				done := time.Since(start)
				b := &r.buckets[min(int(at/bucket), nb-1)]
				b.reads++
				switch src, _ := d.Source(key); src {
				case tiered.SourceMemory, tiered.SourceDisk:
					b.local++
					if r.firstHit < 0 {
						r.firstHit = done
					}
				case tiered.SourceRedis:
					b.redis++
				case tiered.SourceLoader:
					b.loader++
				}
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			return run, r.err
		}
		for i, b := range r.buckets {
			run.buckets[i].add(b)
			run.total.add(b)
		}
		if r.firstHit >= 0 && (run.firstHit < 0 || r.firstHit < run.firstHit) {
			run.firstHit = r.firstHit
		}
	}
	run.loads = o.loads.Load()
	run.revalPass = tg.c.Stats().LastRevalidation
	return run, ctx.Err()
}

// fmtDuration formats a window length for a column title: 100ms, 1.5s.
func fmtDuration(d time.Duration) string {
	return d.Round(time.Millisecond).String()
}
