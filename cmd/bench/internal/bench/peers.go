package bench

import (
	"context"
	"fmt"

	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
	"github.com/thermoscache/thermos/tiered"
)

// peerSpecs lists the caches compared by the peers scenario, thermos
// first: it is the reference of the ratio columns.
func peerSpecs(ctx context.Context, c Config, e *env) []targetSpec {
	redisLocal := func(pol string) func(int) (Target, error) {
		return func(size int) (Target, error) {
			l, closeLocal, err := newLocal(pol, size)
			if err != nil {
				return nil, err
			}
			if e.redis == nil {
				return &readThrough{name: pol, l: l, b: &origin{size: c.ValueSize}, closeFn: closeLocal}, nil
			}
			cl, err := e.redis.client(redisNoCache())
			if err != nil {
				return nil, err
			}
			return &readThrough{name: pol, l: l, b: &redisBackend{c: cl}, closeFn: func() error {
				cl.Close()
				if closeLocal != nil {
					return closeLocal()
				}
				return nil
			}}, nil
		}
	}
	rueidisCache := func(name string, bcast bool) func(int) (Target, error) {
		return func(size int) (Target, error) {
			return newRueidisTarget(name, e.redis, bcast, false, size, c.ValueSize, nil)
		}
	}
	return []targetSpec{
		{name: "thermos memory+redis", consistency: "BCAST tracking", needsRedis: true, build: func(size int) (Target, error) {
			// A Raw route reads the raw values preloaded for every peer:
			// the same keys, bytes and round trips as rueidis's cache.
			l := Layout{Name: "thermos memory+redis", Tiers: tiered.Memory | tiered.Redis, Raw: true}
			return openThermos(ctx, e, thermosSpec{layout: l, prefix: keyName(0)[:len("bench:k:")], entries: size,
				keyLen: len(keyName(uint64(c.Keys - 1))), valueSize: c.ValueSize}, originLoader(&origin{size: c.ValueSize}))
		}},
		{name: "rueidis-optin", consistency: "OPTIN tracking", needsRedis: true, build: rueidisCache("rueidis-optin", false)},
		{name: "rueidis-bcast", consistency: "BCAST tracking", needsRedis: true, build: rueidisCache("rueidis-bcast", true)},
		{name: "golang-lru", consistency: "none", build: redisLocal(PolicyLRU)},
		{name: "otter", consistency: "none", build: redisLocal(PolicyOtter)},
		{name: "redis-only", consistency: "no local tier", needsRedis: true, build: func(int) (Target, error) {
			cl, err := e.redis.client(redisNoCache())
			if err != nil {
				return nil, err
			}
			return &readThrough{name: "redis-only", l: nopLocal{}, b: &redisBackend{c: cl}, closeFn: func() error { cl.Close(); return nil }}, nil
		}},
	}
}

// nopLocal caches nothing.
type nopLocal struct{}

func (nopLocal) get(string) ([]byte, bool) { return nil, false }
func (nopLocal) add(string, []byte)        {}

// peers runs the same zipfian read-only workload against every peer, in
// one run, and reports each peer's p50 latency and throughput as a ratio to
// thermos memory+redis (above 1: slower p50, higher throughput).
func peers(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioPeers, Title: "peers: thermos beside the caches people use today"}
	size := max(1, int(DefaultCacheShare*float64(c.Keys)))
	keys := keyNames(c.Keys)
	read, err := workload.MixByName("C")
	if err != nil {
		return nil, err
	}
	backend := "Redis"
	if e.redis == nil {
		backend = "an in-process origin (no Redis)"
		sec.Notes = append(sec.Notes, "no Redis ("+e.redisDesc+"): rueidis and redis-only skipped; golang-lru and otter read through to an in-process origin")
	} else {
		p.Step(fmt.Sprintf("loading %d keys into Redis", len(keys)), int64(len(keys)), "keys")
		if err := e.load(ctx, keys, c.ValueSize); err != nil {
			return nil, err
		}
	}
	t := Table{
		Title: fmt.Sprintf("zipfian θ=%g reads over %d keys in %s, local caches of %d entries, %d goroutines, %v after %v warm-up",
			c.Theta, c.Keys, backend, size, c.goroutines(), c.Duration, c.Duration/2),
		Columns: append(latencyColumns("cache", "consistency"), "p50 vs thermos", "throughput vs thermos"),
	}
	ch := Chart{Title: "peers: read latency", Kind: BarChart, XLabel: "cache", YLabel: "latency (µs, log scale)", LogY: true}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	hit := Chart{Title: "peers: hit ratio of the local tier", Kind: BarChart, XLabel: "cache", YLabel: "hit ratio (%)"}
	hr := Series{Name: "hit ratio"}
	var ref *runStats // thermos's run, the ratios' reference
	for i, s := range peerSpecs(ctx, c, e) {
		if s.needsRedis && e.redis == nil {
			t.Rows = append(t.Rows, append([]string{s.name, s.consistency, "skipped: no Redis"}, make([]string, len(t.Columns)-3)...))
			continue
		}
		p.Timed(s.name+" (warm-up, then timed)", c.Duration*3/2)
		tg, err := s.build(size)
		if err != nil {
			return nil, err
		}
		// Warm the local tier so the measured part is the steady state.
		if _, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), read, c.Duration/2, 20+i); err != nil {
			tg.Close()
			return nil, err
		}
		st, err := runTimed(ctx, tg, keys, c, c.spec(workload.Zipfian), read, c.Duration, 40+i)
		tg.Close()
		if err != nil {
			return nil, err
		}
		if ref == nil {
			ref = &st
		}
		t.Rows = append(t.Rows, append(latencyRow([]string{s.name, s.consistency}, st),
			fmtVs(float64(st.lat.Summary().P50), float64(ref.lat.Summary().P50), true),
			fmtVs(st.throughput(), ref.throughput(), false)))
		sum := st.lat.Summary()
		p50.Points = append(p50.Points, Point{Label: s.name, Y: float64(sum.P50) / 1e3})
		p99.Points = append(p99.Points, Point{Label: s.name, Y: float64(sum.P99) / 1e3})
		hr.Points = append(hr.Points, Point{Label: s.name, Y: 100 * st.hitRatio()})
		sec.Bench = append(sec.Bench, benchOf("Peers/"+benchName(s.name), st))
	}
	if e.onCluster() {
		sec.Notes = append(sec.Notes, e.topology+": every miss goes to the primary that owns the key's slot (rueidis routes by slot); rueidis and thermos register client tracking on every primary")
	}
	if ref == nil {
		sec.Notes = append(sec.Notes, "thermos memory+redis needs Redis: no ratio column without it")
	} else {
		sec.Notes = append(sec.Notes, "both ratio columns read the same way: how many times slower or faster than thermos memory+redis the cache is, by its p50 latency (its p50 ÷ thermos's) and by its throughput (thermos's ops/s ÷ its ops/s)",
			"thermos memory+redis reads the preloaded raw values through a Raw route (no envelope), GetOrLoad with an in-process loader that a preloaded key never calls; its hit ratio counts memory hits (tiered.Cache.Stats)")
	}
	ch.Series = []Series{p50, p99}
	hit.Series = []Series{hr}
	sec.add(t, ch, hit)
	return sec, nil
}
