package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/bench/workload"
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

// stalenessSpecs lists the caches whose invalidation lag is measured;
// thermos joins once the tiered package exists.
func stalenessSpecs() []targetSpec {
	return []targetSpec{
		{name: "thermos memory+redis", consistency: "BCAST tracking", pending: "the tiered package is not built yet"},
		{name: "rueidis-optin", consistency: "OPTIN tracking"},
		{name: "rueidis-bcast", consistency: "BCAST tracking"},
	}
}

// staleness has an external writer update keys at c.WriteRate while readers
// read them through a client-side cache, and measures how long each write
// takes to invalidate the readers' copy and how many reads were stale.
func staleness(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioStaleness, Title: "staleness: invalidation lag under an external writer"}
	if e.redisAddr == "" {
		sec.Notes = append(sec.Notes, "skipped: needs Redis ("+e.redisDesc+")")
		return sec, nil
	}
	n := min(c.Keys, stalenessKeys)
	sec.Notes = append(sec.Notes,
		"lag: from the writer's acknowledged SET to the reader client's receipt of its invalidation (0 when the invalidation beat the ack)",
		"stale within lag: a read that started after the write was acknowledged but before its invalidation arrived, and returned the old value",
		"stale beyond lag: a read that started after the invalidation arrived and still returned the old value — must be 0",
		"rueidis runs on one connection here: BCAST invalidations reach every connection, so with several the first arrival may come before the one on the connection holding the key")
	t := Table{
		Title: fmt.Sprintf("%d writes/s over %d keys, %d reader goroutines, %v", c.WriteRate, n, c.goroutines(), c.Duration),
		Columns: []string{"cache", "writes", "invalidations", "lag p50", "lag p99", "lag p99.9", "lag max",
			"reads", "stale within lag", "stale beyond lag"},
	}
	ch := Chart{Title: "staleness: invalidation lag", Kind: BarChart, XLabel: "cache", YLabel: "lag (µs)"}
	s50, s99 := Series{Name: "p50"}, Series{Name: "p99"}
	for i, s := range stalenessSpecs() {
		if s.pending != "" {
			t.Rows = append(t.Rows, []string{s.name, "pending", "", "", "", "", "", "", "", ""})
			continue
		}
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
		sec.Bench = append(sec.Bench, Bench{Name: "Staleness/" + s.name, N: st.reads, Metrics: []Metric{
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
	w, err := newRedisClient(e.redisAddr, redisNoCache())
	if err != nil {
		return staleStats{}, err
	}
	defer w.Close()
	for _, k := range keys {
		if err := w.Do(ctx, w.B().Set().Key(k).Value("0").Build()).Error(); err != nil {
			return staleStats{}, fmt.Errorf("bench: staleness preload: %w", err)
		}
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
	onInv := func(msgs []rueidis.RedisMessage) {
		if msgs == nil { // disconnect or flush: nothing to match
			return
		}
		now := time.Now().UnixNano()
		for _, m := range msgs {
			k, err := m.ToString()
			if err != nil || !strings.HasPrefix(k, stalenessPrefix) {
				continue
			}
			i, err := strconv.Atoi(k[len(stalenessPrefix):])
			if err != nil || i < 0 || i >= n {
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
	tg, err := newRueidisTarget(name, e.redisAddr, bcast, true, 2*n, 32, onInv)
	if err != nil {
		return staleStats{}, err
	}
	defer tg.Close()
	for _, k := range keys { // cache every key before the writer starts
		if _, _, err := tg.Get(ctx, k); err != nil {
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
				v, _, err := tg.Get(ctx, keys[i])
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
				}
			}
		})
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
		s.ackAt.Store(time.Now().UnixNano())
		if s.pending {
			s.pending = false
			s.inv.Store(ver)
			record(0)
		}
		s.mu.Unlock()
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
