package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
)

// stalenessKeys caps the keys an external writer updates in the staleness
// scenario, so readers keep all of them cached.
const stalenessKeys = 1000

// stalenessPrefix starts every key of the staleness scenario.
const stalenessPrefix = "bench:s:"

// keyState follows one key's writes and the first read of each.
//
// Writes to one key are serial (one writer goroutine). seen only ever
// holds a version some read through the cache returned, so a read that
// starts after seenAt and returns an older version is stale beyond the
// lag.
type keyState struct {
	sent, acked atomic.Uint64
	ackAt       atomic.Int64 // unix ns of the last ack
	seen        atomic.Uint64
	mu          sync.Mutex // orders first sightings
}

// writeRecord is one write's timeline, unix ns.
type writeRecord struct {
	ackAt, seenAt int64 // seenAt 0: never seen
}

// staleStats is one staleness run's outcome.
type staleStats struct {
	writes, seen            int64
	elapsed                 time.Duration // the writer's run
	reads, within, beyond   int64
	lag                     *signedRecorder
	unmatchedAtEnd, readErr int64
}

// stalenessSpecs lists the caches whose invalidation lag is measured.
func stalenessSpecs() []targetSpec {
	return []targetSpec{
		{name: "thermos memory+redis", consistency: "BCAST tracking"},
		{name: "rueidis-optin", consistency: "OPTIN tracking"},
		{name: "rueidis-bcast", consistency: "BCAST tracking"},
	}
}

// thermosStaleness is the staleness table's thermos row.
const thermosStaleness = "thermos memory+redis"

// stalenessRateTolerance is how far below the requested write rate the
// achieved one may fall before the table warns.
const stalenessRateTolerance = 0.9

// staleness has an external writer update keys at c.WriteRate while readers
// read them through a client-side cache, and measures, the same way for
// every cache, how long after each write's acknowledgement the cache first
// served the new value, and how many reads were stale.
func staleness(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioStaleness, Title: "staleness: invalidation lag under an external writer"}
	if e.redis == nil {
		sec.Notes = append(sec.Notes, "skipped: needs Redis ("+e.redisDesc+")")
		return sec, nil
	}
	n := min(c.Keys, stalenessKeys)
	sec.Notes = append(sec.Notes,
		"lag: from the writer's acknowledged SET to the end of the first read through the cache's own read call (tiered.Cache.Get; rueidis DoCache) that returned the new value, by a reader or by a watcher goroutine that polls each written key from the moment its SET is sent; the same hook for every cache",
		"the lag is signed: negative when the cache served the new value before the writer got its acknowledgement (the invalidation, and the re-read after it, beat the reply to the writer); before ack counts those writes",
		"stale within lag: a read that started after the write was acknowledged but before the new value was first served, and returned the old value",
		"stale beyond lag: a read that started after the new value was first served and still returned an older one — must be 0",
		"readers that never block (memory hits) on GOMAXPROCS or more goroutines delay the goroutine that applies invalidations, which waits for a P: run with --goroutines 1 to see the lag without that",
		"rueidis runs on one connection here: BCAST invalidations reach every connection, so with several the first arrival may come before the one on the connection holding the key; thermos reads raw values through a Raw route (the writer writes plain values)")
	if e.onCluster() {
		sec.Notes = append(sec.Notes, e.topology+": every client tracks each primary on its own connection to it; a key's invalidation comes from the primary that owns its slot, and the writer's SETs go there too")
	}
	t := Table{
		Title: fmt.Sprintf("%d writes/s requested over %d keys, %d reader goroutines, %v", c.WriteRate, n, c.goroutines(), c.Duration),
		Columns: []string{"cache", "writes", "writes/s", "seen", "before ack", "lag min", "lag p50", "lag p99", "lag p99.9", "lag max",
			"reads", "stale within lag", "stale beyond lag"},
	}
	ch := Chart{Title: "staleness: invalidation lag", Kind: BarChart, XLabel: "cache", YLabel: "lag (µs, log scale; ≤ 0 marked 0)", LogY: true}
	s50, s99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, s := range stalenessSpecs() {
		p.Timed(s.name, c.Duration)
		st, err := measureStaleness(ctx, c, e, s.name, s.name == "rueidis-bcast", n, 60+i)
		if err != nil {
			return nil, err
		}
		rate := float64(st.writes) / st.elapsed.Seconds()
		if rate < stalenessRateTolerance*float64(c.WriteRate) {
			sec.Warnings = append(sec.Warnings, fmt.Sprintf("%s: the writer achieved %.0f writes/s of the %d requested (%d writes in %v): the machine could not keep the pace",
				s.name, rate, c.WriteRate, st.writes, st.elapsed.Round(time.Millisecond)))
		}
		before := ""
		if st.seen > 0 {
			before = fmtPct(float64(st.lag.negatives()) / float64(st.seen))
		}
		t.Rows = append(t.Rows, []string{s.name, strconv.FormatInt(st.writes, 10), fmt.Sprintf("%.0f", rate), strconv.FormatInt(st.seen, 10), before,
			fmtSigned(st.lag.quantile(0)), fmtSigned(st.lag.quantile(50)), fmtSigned(st.lag.quantile(99)), fmtSigned(st.lag.quantile(99.9)), fmtSigned(st.lag.quantile(100)),
			strconv.FormatInt(st.reads, 10), strconv.FormatInt(st.within, 10), strconv.FormatInt(st.beyond, 10)})
		s50.Points = append(s50.Points, Point{Label: s.name, Y: float64(st.lag.quantile(50)) / 1e3})
		s99.Points = append(s99.Points, Point{Label: s.name, Y: float64(st.lag.quantile(99)) / 1e3})
		sec.Bench = append(sec.Bench, Bench{Name: "Staleness/" + benchName(s.name), N: st.reads, Metrics: []Metric{
			{float64(st.lag.quantile(50).Nanoseconds()), "lag-p50-ns"},
			{float64(st.lag.quantile(99).Nanoseconds()), "lag-p99-ns"},
			{float64(st.within), "stale-within-lag"},
			{float64(st.beyond), "stale-beyond-lag"},
		}})
		if st.unmatchedAtEnd > 0 {
			sec.Notes = append(sec.Notes, fmt.Sprintf("%s: %d keys' last write was never seen through the cache within the settle time (%v)", s.name, st.unmatchedAtEnd, settleTimeout))
		}
	}
	ch.Series = []Series{s50, s99}
	sec.add(t, ch)
	return sec, nil
}

// settleTimeout bounds the wait for the last writes' invalidations.
const settleTimeout = time.Second

func measureStaleness(ctx context.Context, c Config, e *env, name string, bcast bool, n, stream int) (staleStats, error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = stalenessPrefix + strconv.Itoa(i)
	}
	w, err := e.redis.client(redisNoCache())
	if err != nil {
		return staleStats{}, err
	}
	defer w.Close()
	if err := setAll(ctx, w, keys, func(string) []byte { return []byte("0") }); err != nil {
		return staleStats{}, fmt.Errorf("bench: staleness: %w", err)
	}
	state := make([]keyState, n)
	// records[j] is write j's timeline; write j is version j/n+1 of key j%n.
	records := make([]writeRecord, c.WriteRate*int(max(c.Duration, time.Second)/time.Second)*2+n)
	var recMu sync.Mutex
	var seenCount atomic.Int64
	// seen records that a read through the cache returned version ver of
	// key i, ending at unix ns now, if no read returned it before.
	seen := func(i int, ver uint64, now int64) {
		s := &state[i]
		s.mu.Lock()
		defer s.mu.Unlock()
		if ver <= s.seen.Load() || ver > s.sent.Load() {
			return
		}
		for v := s.seen.Load() + 1; v <= ver; v++ { // a newer value also ends the older writes' lag
			if j := int(v-1)*n + i; j < len(records) {
				recMu.Lock()
				records[j].seenAt = now
				recMu.Unlock()
				seenCount.Add(1)
			}
		}
		s.seen.Store(ver)
	}
	var read func(ctx context.Context, key string) ([]byte, error)
	if name == thermosStaleness {
		l := Layout{Name: name, Tiers: tiered.Memory | tiered.Redis, Raw: true}
		tg, err := openThermos(ctx, e, thermosSpec{layout: l, prefix: stalenessPrefix, entries: 2 * n,
			keyLen: len(keys[n-1]), valueSize: 32}, originLoader(&origin{size: 32}))
		if err != nil {
			return staleStats{}, err
		}
		defer tg.Close()
		read = func(ctx context.Context, key string) ([]byte, error) {
			v, _, err := tg.c.Get(ctx, key)
			return v, err
		}
	} else {
		tg, err := newRueidisTarget(name, e.redis, bcast, true, 2*n, 32, nil)
		if err != nil {
			return staleStats{}, err
		}
		defer tg.Close()
		read = func(ctx context.Context, key string) ([]byte, error) {
			v, _, err := tg.Get(ctx, key)
			return v, err
		}
	}
	for _, k := range keys { // cache every key before the writer starts
		if _, err := read(ctx, k); err != nil {
			return staleStats{}, err
		}
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads, within, beyond, readErrs atomic.Int64
	for g := range c.goroutines() {
		gen, err := workload.New(workload.Spec{Distribution: workload.Zipfian, Keys: uint64(n), Theta: c.Theta}, workload.Seed(c.Seed, stream*1000+g))
		if err != nil {
			return staleStats{}, err
		}
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				i := gen.Next()
				s := &state[i]
				sawn, acked := s.seen.Load(), s.acked.Load()
				v, err := read(ctx, keys[i])
				if err != nil {
					readErrs.Add(1)
					continue
				}
				ver, _ := strconv.ParseUint(string(v), 10, 64)
				reads.Add(1)
				switch {
				case ver < sawn:
					beyond.Add(1)
				case ver < acked:
					within.Add(1)
				case ver > sawn:
					seen(int(i), ver, time.Now().UnixNano())
				}
			}
		})
	}
	watched := make(chan watch, 4*c.WriteRate+n)
	wg.Go(func() { watchWrites(ctx, watched, keys, state, read, seen, &stop) })

	// The writer paces itself to c.WriteRate, cycling through the keys so
	// writes to one key are far apart. The watcher learns of a write
	// before its SET is sent, so a cache that serves the new value before
	// the writer's ack shows a negative lag.
	interval := time.Second / time.Duration(c.WriteRate)
	start := time.Now()
	var writeErr error
	var writes int
	for j := 0; time.Since(start) < c.Duration && ctx.Err() == nil && j < len(records); j++ {
		if d := time.Until(start.Add(time.Duration(j) * interval)); d > 0 {
			time.Sleep(d) // pacing the write rate, not synchronising
		}
		i := j % n
		s := &state[i]
		ver := s.sent.Load() + 1
		s.sent.Store(ver)
		select {
		case watched <- watch{i: i, ver: ver}:
		case <-ctx.Done():
		}
		if err := w.Do(ctx, w.B().Set().Key(keys[i]).Value(strconv.FormatUint(ver, 10)).Build()).Error(); err != nil {
			writeErr = err
			break
		}
		ackAt := time.Now().UnixNano()
		recMu.Lock()
		records[j].ackAt = ackAt
		recMu.Unlock()
		s.ackAt.Store(ackAt)
		s.acked.Store(ver)
		writes++
	}
	elapsed := time.Since(start)
	// Let the last writes be seen before stopping the readers.
	deadline := time.Now().Add(min(settleTimeout, c.Duration))
	for time.Now().Before(deadline) && seenCount.Load() < int64(writes) {
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		return staleStats{}, fmt.Errorf("bench: staleness writer: %w", writeErr)
	}
	if err := ctx.Err(); err != nil {
		return staleStats{}, err
	}
	st := staleStats{writes: int64(writes), elapsed: elapsed, lag: newSignedRecorder()}
	for _, r := range records[:writes] {
		if r.seenAt != 0 && r.ackAt != 0 {
			st.lag.Record(time.Duration(r.seenAt - r.ackAt))
			st.seen++
		}
	}
	for i := range state {
		if state[i].seen.Load() < state[i].acked.Load() {
			st.unmatchedAtEnd++
		}
	}
	st.reads, st.within, st.beyond, st.readErr = reads.Load(), within.Load(), beyond.Load(), readErrs.Load()
	if st.readErr*100 > st.reads+1 {
		return st, fmt.Errorf("bench: staleness: %d of %d reads through %s failed", st.readErr, st.reads+st.readErr, name)
	}
	return st, nil
}

// watch is one write the watcher waits to see.
type watch struct {
	i   int
	ver uint64
}

// watchWrites polls every written key through read, from the moment its
// write is about to be sent, until the cache serves the written version (or
// a later one), and passes it to seen, which records it unless a reader saw
// it first. It returns when stop is set, or ctx ends.
func watchWrites(ctx context.Context, in <-chan watch, keys []string, state []keyState,
	read func(context.Context, string) ([]byte, error), seen func(i int, ver uint64, now int64), stop *atomic.Bool) {
	var pending []watch
	for ctx.Err() == nil {
		if len(pending) == 0 {
			if stop.Load() {
				return
			}
			select {
			case w := <-in:
				pending = append(pending, w)
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond): // recheck stop
				continue
			}
		}
	drain:
		for {
			select {
			case w := <-in:
				pending = append(pending, w)
			default:
				break drain
			}
		}
		kept := pending[:0]
		for _, w := range pending {
			if state[w.i].seen.Load() >= w.ver {
				continue // a reader saw it first
			}
			v, err := read(ctx, keys[w.i])
			now := time.Now().UnixNano()
			ver, perr := strconv.ParseUint(string(v), 10, 64)
			if err != nil || perr != nil || ver < w.ver {
				kept = append(kept, w)
				continue
			}
			seen(w.i, ver, now)
		}
		pending = kept
		if stop.Load() {
			return // the settle wait is over: what is left is reported unseen
		}
		runtime.Gosched()
	}
}
