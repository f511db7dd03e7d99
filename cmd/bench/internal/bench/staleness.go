package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
)

// stalenessKeys caps the keys an external writer updates in the staleness
// scenario, so readers keep all of them cached.
const stalenessKeys = 1000

// stalenessPrefix starts every key of the staleness scenario.
const stalenessPrefix = "bench:s:"

// keyState follows one key's writes and invalidations.
//
// Writes to one key are serial (one writer goroutine), so the invalidation
// that arrives while write n is in flight (sent, not yet acknowledged)
// belongs to write n; one that arrives with nothing in flight belongs to
// the last acknowledged write. inv only ever holds a version whose
// invalidation the reader's client has received, so a read that starts
// after inv was set and returns an older version is stale beyond the
// invalidation lag.
type keyState struct {
	sent, acked, inv atomic.Uint64
	ackAt            atomic.Int64 // unix ns of the last ack

	mu      sync.Mutex // orders the writer's ack against the reader's invalidation
	pending bool       // an invalidation arrived while a write was in flight
}

// staleStats is one staleness run's outcome.
type staleStats struct {
	writes, matched         int64
	reads, within, beyond   int64
	lag                     *Recorder
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

// staleness has an external writer update keys at c.WriteRate while readers
// read them through a client-side cache, and measures how long each write
// takes to invalidate the readers' copy and how many reads were stale.
func staleness(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioStaleness, Title: "staleness: invalidation lag under an external writer"}
	if e.redis == nil {
		sec.Notes = append(sec.Notes, "skipped: needs Redis ("+e.redisDesc+")")
		return sec, nil
	}
	n := min(c.Keys, stalenessKeys)
	sec.Notes = append(sec.Notes,
		"lag (rueidis): from the writer's acknowledged SET to the reader client's receipt of its invalidation (0 when the invalidation beat the ack)",
		"lag (thermos): from the writer's acknowledged SET to the first read by a watcher goroutine, polling each written key through tiered.Cache.Get, that returns the new value, or an earlier such read by a reader — thermos's own view: when it stops serving the old value (a Raw route: the writer writes plain values); its invalidations column counts writes seen",
		"stale within lag: a read that started after the write was acknowledged but before its invalidation arrived, and returned the old value",
		"stale beyond lag: a read that started after the invalidation arrived (thermos: after the watcher saw the new value) and still returned the old value — must be 0",
		"thermos's lag includes the GET that follows the invalidation; readers that never block (memory hits) on GOMAXPROCS or more goroutines delay the watcher and the tracking connection's goroutine, which wait for a P: run with --goroutines 1 to see the lag without that",
		"rueidis runs on one connection here: BCAST invalidations reach every connection, so with several the first arrival may come before the one on the connection holding the key")
	if e.onCluster() {
		sec.Notes = append(sec.Notes, e.topology+": every client tracks each primary on its own connection to it; a key's invalidation comes from the primary that owns its slot, and the writer's SETs go there too")
	}
	t := Table{
		Title: fmt.Sprintf("%d writes/s over %d keys, %d reader goroutines, %v", c.WriteRate, n, c.goroutines(), c.Duration),
		Columns: []string{"cache", "writes", "invalidations", "lag p50", "lag p99", "lag p99.9", "lag max",
			"reads", "stale within lag", "stale beyond lag"},
	}
	ch := Chart{Title: "staleness: invalidation lag", Kind: BarChart, XLabel: "cache", YLabel: "lag (µs)"}
	s50, s99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, s := range stalenessSpecs() {
		p.Printf("staleness: %s", s.name)
		st, err := measureStaleness(ctx, c, e, s.name, s.name == "rueidis-bcast", n, 60+i)
		if err != nil {
			return nil, err
		}
		sum := st.lag.Summary()
		t.Rows = append(t.Rows, []string{s.name, strconv.FormatInt(st.writes, 10), strconv.FormatInt(st.matched, 10),
			fmtDur(sum.P50), fmtDur(sum.P99), fmtDur(sum.P999), fmtDur(sum.Max),
			strconv.FormatInt(st.reads, 10), strconv.FormatInt(st.within, 10), strconv.FormatInt(st.beyond, 10)})
		s50.Points = append(s50.Points, Point{Label: s.name, Y: float64(sum.P50) / 1e3})
		s99.Points = append(s99.Points, Point{Label: s.name, Y: float64(sum.P99) / 1e3})
		sec.Bench = append(sec.Bench, Bench{Name: "Staleness/" + benchName(s.name), N: st.reads, Metrics: []Metric{
			{float64(sum.P50.Nanoseconds()), "lag-p50-ns"},
			{float64(sum.P99.Nanoseconds()), "lag-p99-ns"},
			{float64(st.within), "stale-within-lag"},
			{float64(st.beyond), "stale-beyond-lag"},
		}})
		if st.unmatchedAtEnd > 0 {
			sec.Notes = append(sec.Notes, fmt.Sprintf("%s: %d keys' last write brought no invalidation (OPTIN tracks only keys read since their last invalidation)", s.name, st.unmatchedAtEnd))
		}
	}
	ch.Series = []Series{s50, s99}
	sec.Tables = append(sec.Tables, t)
	sec.Charts = append(sec.Charts, ch)
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
	st := staleStats{lag: NewRecorder()}
	var lagMu sync.Mutex // the invalidation callback and the writer both record lags
	var matched atomic.Int64
	record := func(d time.Duration) {
		lagMu.Lock()
		st.lag.Record(d)
		lagMu.Unlock()
		matched.Add(1)
	}
	indexOf := func(k string) (int, bool) {
		if !strings.HasPrefix(k, stalenessPrefix) {
			return 0, false
		}
		i, err := strconv.Atoi(k[len(stalenessPrefix):])
		return i, err == nil && i >= 0 && i < n
	}
	onInv := func(msgs []rueidis.RedisMessage) {
		if msgs == nil { // disconnect or flush: nothing to match
			return
		}
		now := time.Now().UnixNano()
		for _, m := range msgs {
			k, err := m.ToString()
			if err != nil {
				continue
			}
			i, ok := indexOf(k)
			if !ok {
				continue
			}
			s := &state[i]
			s.mu.Lock()
			if s.sent.Load() > s.acked.Load() {
				s.pending = true
			} else if a := s.acked.Load(); a > s.inv.Load() {
				s.inv.Store(a)
				record(time.Duration(now - s.ackAt.Load()))
			}
			s.mu.Unlock()
		}
	}
	// seen marks version ver of key i as served by thermos at unix ns now,
	// if ver is the acknowledged version and nobody saw it before, and
	// records the lag.
	seen := func(i int, ver uint64, now int64) {
		s := &state[i]
		s.mu.Lock()
		if ver == s.acked.Load() && ver > s.inv.Load() {
			s.inv.Store(ver)
			record(time.Duration(now - s.ackAt.Load()))
		}
		s.mu.Unlock()
	}
	var read func(ctx context.Context, key string) ([]byte, error)
	var watched chan watch // thermos: acknowledged writes for the watcher
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
		watched = make(chan watch, 4*c.WriteRate)
	} else {
		tg, err := newRueidisTarget(name, e.redis, bcast, true, 2*n, 32, onInv)
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
				inv, acked := s.inv.Load(), s.acked.Load()
				v, err := read(ctx, keys[i])
				if err != nil {
					readErrs.Add(1)
					continue
				}
				ver, _ := strconv.ParseUint(string(v), 10, 64)
				reads.Add(1)
				switch {
				case ver < inv:
					beyond.Add(1)
				case ver < acked:
					within.Add(1)
				case watched != nil && ver > inv:
					// thermos: this read may be the first to see the
					// acknowledged write's value.
					seen(int(i), ver, time.Now().UnixNano())
				}
			}
		})
	}

	if watched != nil {
		wg.Go(func() { watchWrites(ctx, watched, keys, state, read, seen, &stop) })
	}

	// The writer paces itself to c.WriteRate, cycling through the keys so
	// writes to one key are far apart.
	interval := time.Second / time.Duration(c.WriteRate)
	start := time.Now()
	var writeErr error
	for j := 0; time.Since(start) < c.Duration && ctx.Err() == nil; j++ {
		if d := time.Until(start.Add(time.Duration(j) * interval)); d > 0 {
			time.Sleep(d) // pacing the write rate, not synchronising
		}
		s := &state[j%n]
		ver := s.sent.Load() + 1
		s.sent.Store(ver)
		if err := w.Do(ctx, w.B().Set().Key(keys[j%n]).Value(strconv.FormatUint(ver, 10)).Build()).Error(); err != nil {
			writeErr = err
			break
		}
		s.mu.Lock()
		s.acked.Store(ver)
		ackAt := time.Now().UnixNano()
		s.ackAt.Store(ackAt)
		if watched == nil && s.pending {
			s.pending = false
			s.inv.Store(ver)
			record(0)
		}
		s.mu.Unlock()
		if watched != nil {
			select { // sent after unlocking: the watcher takes the same lock
			case watched <- watch{i: j % n, ver: ver, ackAt: ackAt}:
			case <-ctx.Done():
			}
		}
		st.writes++
	}
	// Let the last invalidations arrive before stopping the readers.
	deadline := time.Now().Add(min(settleTimeout, c.Duration))
	for time.Now().Before(deadline) && matched.Load() < st.writes {
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		return st, fmt.Errorf("bench: staleness writer: %w", writeErr)
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	for i := range state {
		if state[i].inv.Load() < state[i].acked.Load() {
			st.unmatchedAtEnd++
		}
	}
	st.matched = matched.Load()
	st.reads, st.within, st.beyond, st.readErr = reads.Load(), within.Load(), beyond.Load(), readErrs.Load()
	if st.readErr*100 > st.reads+1 {
		return st, fmt.Errorf("bench: staleness: %d of %d reads through %s failed", st.readErr, st.reads+st.readErr, name)
	}
	return st, nil
}

// watch is one acknowledged write the thermos watcher waits to see.
type watch struct {
	i     int
	ver   uint64
	ackAt int64 // unix ns
}

// watchWrites polls every acknowledged write's key through read until
// thermos serves the written version (or a later one) and passes it to
// seen, which records the lag unless a reader saw it first. From then on a
// read that returns an older version is stale beyond the lag. It returns
// when stop is set and nothing is pending, or ctx ends.
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
			if state[w.i].inv.Load() >= w.ver {
				continue // a reader saw it first
			}
			v, err := read(ctx, keys[w.i])
			ver, perr := strconv.ParseUint(string(v), 10, 64)
			if err != nil || perr != nil || ver < w.ver {
				kept = append(kept, w)
				continue
			}
			seen(w.i, w.ver, time.Now().UnixNano())
		}
		pending = kept
		if stop.Load() && len(pending) > 0 {
			return // the settle wait is over: what is left is reported unmatched
		}
		runtime.Gosched()
	}
}
