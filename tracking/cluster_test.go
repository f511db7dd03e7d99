package tracking

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/keyslot"
	"github.com/thermoscache/thermos/internal/redistest"
)

// Tests on a local Redis Cluster (internal/redistest.StartCluster): three
// primaries, with one replica each where a failover is needed.

func newClusterCache(t testing.TB, cl *redistest.Cluster, opts *Options) *Cache {
	t.Helper()
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.Redis == nil {
		o.Redis = &rueidis.ClientOption{InitAddress: cl.Addrs()}
	}
	if o.Decode == nil { // values are decimal versions
		o.Decode = func(_ string, raw []byte) (Item, error) {
			v, _ := strconv.ParseUint(string(raw), 10, 64)
			return Item{Value: raw, Version: v}, nil
		}
	}
	if o.TopologyInterval == 0 {
		o.TopologyInterval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(t.Context(), &o)
	if err != nil {
		t.Fatalf("New on a cluster: %v", err)
	}
	if c.Client().Mode() != rueidis.ClientModeCluster {
		t.Fatalf("client mode = %v, want cluster", c.Client().Mode())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newClusterWriter(t testing.TB, cl *redistest.Cluster) rueidis.Client {
	t.Helper()
	w, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: cl.Addrs(), DisableCache: true})
	if err != nil {
		t.Fatalf("cluster writer: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

// keysOn returns n keys prefix+i served by node, per slots.
func keysOn(slots []*redistest.ClusterNode, node *redistest.ClusterNode, prefix string, n int) []string {
	var ks []string
	for i := 0; len(ks) < n; i++ {
		if k := prefix + strconv.Itoa(i); slots[keyslot.Of(k)] == node {
			ks = append(ks, k)
		}
	}
	return ks
}

// drainCluster writes one sentinel key on every primary and waits until
// every cache heard each: invalidations are ordered per connection, so a
// cache that heard a node's sentinel heard every earlier write on that node.
func drainCluster(t *testing.T, cl *redistest.Cluster, w rueidis.Client, prefix string, caches ...*Cache) {
	t.Helper()
	slots := cl.SlotMap()
	var sentinels []string
	for _, p := range cl.Primaries() {
		sentinels = append(sentinels, keysOn(slots, p, prefix+"sentinel:", 1)[0])
	}
	heard := make([]func(string) int, len(caches))
	for i, c := range caches {
		heard[i] = invalidations(c)
	}
	for _, k := range sentinels {
		set(t, w, k, "x")
	}
	for i := range caches {
		for _, k := range sentinels {
			waitFor(t, "the sentinel invalidation of "+k, 15*time.Second, func() bool { return heard[i](k) > 0 })
		}
	}
}

// clientFlags returns the flags of every client connected to node.
func clientFlags(t *testing.T, node *redistest.ClusterNode) []string {
	t.Helper()
	out, err := node.Do("CLIENT", "LIST")
	if err != nil {
		t.Fatalf("CLIENT LIST on %s: %v", node.Addr(), err)
	}
	var flags []string
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "flags="); ok {
			flags = append(flags, v)
		}
	}
	return flags
}

// TestClusterInvalidationPerShard: a cache on a 3-primary cluster has BCAST
// tracking armed on every primary before it reads anything there; external
// writes on each shard (by a cluster client and by redis-cli on the owner)
// invalidate both caches. Reports the invalidation lag per shard.
func TestClusterInvalidationPerShard(t *testing.T) {
	n := 100
	if testing.Short() {
		n = 30
	}
	cl := redistest.StartCluster(t, nil)
	caches := []*Cache{
		newClusterCache(t, cl, &Options{Prefixes: []string{"c:"}}),
		newClusterCache(t, cl, &Options{Prefixes: []string{"c:"}}),
	}
	primaries := cl.Primaries()
	for _, p := range primaries {
		waitFor(t, "BCAST tracking on "+p.Addr(), 10*time.Second, func() bool {
			armed := 0
			for _, f := range clientFlags(t, p) {
				if strings.Contains(f, "t") && strings.Contains(f, "B") {
					armed++
				}
			}
			return armed >= len(caches)
		})
	}
	// rueidis's cluster client dials every address at start and closes all
	// but the first to answer: those closes are epoch bumps before anything
	// is cached. Count the bumps from here.
	bumps0 := make([]uint64, len(caches))
	for i, c := range caches {
		bumps0[i] = c.Stats().EpochBumps
	}
	type arrival struct {
		mu sync.Mutex
		at map[string]time.Time
	}
	arrivals := make([]*arrival, len(caches))
	for i, c := range caches {
		a := &arrival{at: map[string]time.Time{}}
		arrivals[i] = a
		c.OnInvalidate(func(keys []string, _ bool) {
			now := time.Now()
			a.mu.Lock()
			for _, k := range keys {
				if _, ok := a.at[k]; !ok {
					a.at[k] = now
				}
			}
			a.mu.Unlock()
		})
	}
	heardAt := func(i int, key string) (time.Time, bool) {
		arrivals[i].mu.Lock()
		defer arrivals[i].mu.Unlock()
		at, ok := arrivals[i].at[key]
		return at, ok
	}
	w := newClusterWriter(t, cl)
	ctx := context.Background()
	slots := cl.SlotMap()
	for si, p := range primaries {
		var rtts, lags []time.Duration
		for _, key := range keysOn(slots, p, "c:", n) {
			set(t, w, key, "v1")
			for _, c := range caches {
				fetchCached(t, c, key)
			}
			for _, a := range arrivals {
				a.mu.Lock()
				delete(a.at, key)
				a.mu.Unlock()
			}
			start := time.Now()
			if err := w.Do(ctx, w.B().Set().Key(key).Value("v2").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			rtts = append(rtts, time.Since(start))
			for ci, c := range caches {
				waitFor(t, "invalidation of "+key, 5*time.Second, func() bool { _, ok := heardAt(ci, key); return ok })
				if it, fresh, ok := c.Get(key); ok && fresh && string(it.Value) == "v1" {
					t.Fatalf("cache %d serves %s = v1 after its invalidation", ci, key)
				}
				at, _ := heardAt(ci, key)
				lags = append(lags, at.Sub(start))
			}
		}
		// A write by another program on the owner itself.
		key := keysOn(slots, p, "c:cli:", 1)[0]
		p.CLI("SET", key, "v1")
		for _, c := range caches {
			fetchCached(t, c, key)
		}
		p.CLI("SET", key, "v2")
		for _, c := range caches {
			waitFor(t, "redis-cli invalidation of "+key, 5*time.Second, func() bool {
				it, fresh, ok := c.Get(key)
				return !(ok && fresh && string(it.Value) == "v1")
			})
		}
		q := func(d []time.Duration, p float64) time.Duration {
			slices.Sort(d)
			return d[int(p*float64(len(d)-1))]
		}
		t.Logf("shard %d (%s): SET round trip p50 %v p99 %v; invalidation lag over %d samples p50 %v p99 %v",
			si, p.Addr(), q(rtts, 0.5), q(rtts, 0.99), len(lags), q(lags, 0.5), q(lags, 0.99))
	}
	// rueidis replaces a connection or two of a new cluster client shortly
	// after start (its discovery connection), and each close reaches the
	// cache as a null invalidation: a handful of bumps is that, not the
	// cluster changing under the cache.
	for i, c := range caches {
		if n := c.Stats().EpochBumps - bumps0[i]; n > 3 {
			t.Errorf("cache %d: %d epoch bumps on a stable cluster, want at most the start's few", i, n)
		}
	}
}

// TestClusterStaleReadHunt is TestStaleReadHunt on a cluster: keys on all
// three shards, 2 caches, 8 readers, 2 writers, fills delayed to widen the
// race. With the guard no cache holds a non-latest version after the drain;
// without it the hunt finds some.
func TestClusterStaleReadHunt(t *testing.T) {
	d := 3 * time.Second
	if testing.Short() {
		d = time.Second
	}
	cl := redistest.StartCluster(t, nil)
	for _, guard := range []bool{true, false} {
		t.Run(fmt.Sprint("guard=", guard), func(t *testing.T) {
			prefix := fmt.Sprintf("h%v:", guard)
			caches := []*Cache{
				newClusterCache(t, cl, &Options{Prefixes: []string{prefix}}),
				newClusterCache(t, cl, &Options{Prefixes: []string{prefix}}),
			}
			for _, c := range caches {
				c.testNoGuard = !guard
				c.testBeforeFill = func(string) { time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) }
			}
			r := runCluster(t, cl, caches, runConfig{prefix: prefix, keys: 1000, d: d, favourHot: true})
			t.Logf("guard=%v: %s", guard, r)
			if guard && (r.staleAfterDrain != 0 || r.floorViolations != 0) {
				t.Fatalf("guard on: %d stale keys after the drain, %d reads below the floor", r.staleAfterDrain, r.floorViolations)
			}
			if !guard && r.staleAfterDrain == 0 {
				t.Fatalf("guard off: no stale key found; the hunt cannot detect the race")
			}
		})
	}
}

// TestClusterFailover kills a primary (SIGKILL) while readers and writers
// run, lets the cluster promote its replica, then runs a coordinated
// CLUSTER FAILOVER of another shard. Writes count as acknowledged once WAIT
// says the replica has them (so the failover cannot lose them). No read
// returns a value older than a write acknowledged before the cache applied
// an invalidation (or epoch bump) of that key, and after the drain no cache
// holds a non-latest value. One cache drops on an epoch bump, the other
// keeps entries unverified and revalidates them as tiered would.
func TestClusterFailover(t *testing.T) {
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Replicas: 1})
	caches := []*Cache{
		newClusterCache(t, cl, &Options{Prefixes: []string{"f:"}, ConnWriteTimeout: 500 * time.Millisecond}),
		newClusterCache(t, cl, &Options{Prefixes: []string{"f:"}, ConnWriteTimeout: 500 * time.Millisecond, KeepUnverified: true}),
	}
	primaries := cl.Primaries()
	var failover time.Duration
	r := runCluster(t, cl, caches, runConfig{prefix: "f:", keys: 300, wait: true, fault: func() {
		start := time.Now()
		cl.KillPrimary(primaries[0])
		failover = time.Since(start)
		primaries[0].Restart() // rejoins as a replica, so WAIT 1 succeeds again
		cl.WaitOK()
		cl.Failover(cl.Replicas(primaries[1])[0])
	}})
	t.Logf("SIGKILL to promotion %v; %s", failover, r)
	if r.staleAfterDrain != 0 || r.floorViolations != 0 {
		t.Fatalf("%d stale keys after the drain, %d reads below the floor", r.staleAfterDrain, r.floorViolations)
	}
	for i, c := range caches {
		if st := c.Stats(); st.EpochBumps == 0 {
			t.Errorf("cache %d: no epoch bump through a SIGKILL and a failover", i)
		}
	}
	// Tracking is armed on every primary of the new topology.
	for _, p := range cl.Primaries() {
		waitFor(t, "BCAST tracking on the new primary "+p.Addr(), 10*time.Second, func() bool {
			armed := 0
			for _, f := range clientFlags(t, p) {
				if strings.Contains(f, "B") {
					armed++
				}
			}
			return armed >= len(caches)
		})
	}
}

// TestClusterTopologyChangeUnverifies moves an empty slot between
// primaries: no key changes, no connection drops, so only the CLUSTER SLOTS
// check can notice. Entries cached before become unverified; with the check
// off they stay fresh.
func TestClusterTopologyChangeUnverifies(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	w := newClusterWriter(t, cl)
	set(t, w, "u:1", "1")
	for _, interval := range []time.Duration{100 * time.Millisecond, -1} {
		c := newClusterCache(t, cl, &Options{Prefixes: []string{"u:"}, KeepUnverified: true, TopologyInterval: interval})
		fetchCached(t, c, "u:1")
		slots := cl.SlotMap()
		var empty uint16
		for s := range uint16(keyslot.Slots) {
			if s != keyslot.Of("u:1") && slots[s] != nil {
				empty = s
				break
			}
		}
		primaries := cl.Primaries()
		to := primaries[0]
		if to == slots[empty] {
			to = primaries[1]
		}
		cl.MoveSlot(empty, slots[empty], to)
		if interval < 0 {
			// Nothing can tell the cache; give a check the time to run had
			// it been on. (The epoch itself may move meanwhile for other
			// reasons: rueidis closing a seed connection, and the re-arm
			// after it.)
			deadline := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := c.Stats().TopologyChanges; n != 0 {
				t.Fatalf("check off: %d topology changes seen; want none", n)
			}
			continue
		}
		waitFor(t, "the topology check to see the move", 10*time.Second, func() bool { return c.Stats().TopologyChanges > 0 })
		if _, fresh, ok := c.Get("u:1"); !ok || fresh {
			t.Fatalf("after a slot move: entry ok=%v fresh=%v, want kept unverified", ok, fresh)
		}
	}
}

// TestClusterResharding moves slots holding keys between primaries
// (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while readers and
// writers run: no read below the floor, nothing stale after the drain.
func TestClusterResharding(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	caches := []*Cache{
		newClusterCache(t, cl, &Options{Prefixes: []string{"m:"}}),
		newClusterCache(t, cl, &Options{Prefixes: []string{"m:"}, KeepUnverified: true}),
	}
	const nkeys = 300
	moved, slotsMoved := 0, 0
	r := runCluster(t, cl, caches, runConfig{prefix: "m:", keys: nkeys, fault: func() {
		slots := cl.SlotMap()
		primaries := cl.Primaries()
		next := map[*redistest.ClusterNode]*redistest.ClusterNode{}
		for i, p := range primaries {
			next[p] = primaries[(i+1)%len(primaries)]
		}
		seen := map[uint16]bool{}
		for i := 0; i < nkeys && slotsMoved < 6; i += 7 {
			s := keyslot.Of("m:" + strconv.Itoa(i))
			if seen[s] {
				continue
			}
			seen[s] = true
			from := slots[s]
			moved += cl.MoveSlot(s, from, next[from])
			slotsMoved++
		}
	}})
	t.Logf("%d slots moved with %d keys; %s", slotsMoved, moved, r)
	if moved == 0 {
		t.Fatal("no key moved: the test moved empty slots")
	}
	if r.staleAfterDrain != 0 || r.floorViolations != 0 {
		t.Fatalf("%d stale keys after the drain, %d reads below the floor", r.staleAfterDrain, r.floorViolations)
	}
}

type runConfig struct {
	prefix    string
	keys      int
	d         time.Duration // run time without a fault
	wait      bool          // WAIT 1 after every write
	favourHot bool          // readers favour the key a writer is about to write
	fault     func()        // run on the test goroutine while readers and writers run
}

type runResult struct {
	writes, reads, fetches, unverified, revalidated int64
	floorViolations, staleAfterDrain                int
	firstViolations                                 []string
	epochBumps, refused                             uint64
}

func (r runResult) String() string {
	return fmt.Sprintf("%d acknowledged writes, %d reads (%d fetches), %d unverified serves, %d revalidated, %d refused fills, %d epoch bumps, %d reads below the floor %q, %d stale keys after the drain",
		r.writes, r.reads, r.fetches, r.unverified, r.revalidated, r.refused, r.epochBumps, r.floorViolations, r.firstViolations, r.staleAfterDrain)
}

// runCluster runs 2 writers and 4 readers per cache over keys prefix0 …
// prefix<keys-1>, values being increasing versions. Each cache has a floor
// per key: when it applies an invalidation of a key (or an epoch bump), the
// floor rises to the latest acknowledged version. A read started after that
// must return at least the floor (checked on every read). After the run the
// caches are drained (a sentinel per primary) and every fresh entry must
// hold Redis's value.
func runCluster(t *testing.T, cl *redistest.Cluster, caches []*Cache, cfg runConfig) runResult {
	t.Helper()
	const writers, readersPer = 2, 4
	n := cfg.keys
	key := func(i int) string { return cfg.prefix + strconv.Itoa(i) }
	index := func(k string) int {
		s, ok := strings.CutPrefix(k, cfg.prefix)
		if !ok {
			return -1
		}
		i, err := strconv.Atoi(s)
		if err != nil || i >= n {
			return -1
		}
		return i
	}
	acked := make([]atomic.Int64, n)
	floors := make([][]atomic.Int64, len(caches))
	for ci, c := range caches {
		floors[ci] = make([]atomic.Int64, n)
		fl := floors[ci]
		raise := func(i int) {
			a := acked[i].Load()
			for f := fl[i].Load(); a > f && !fl[i].CompareAndSwap(f, a); f = fl[i].Load() {
			}
		}
		c.OnInvalidate(func(keys []string, bump bool) {
			if bump {
				for i := range n {
					raise(i)
				}
				return
			}
			for _, k := range keys {
				if i := index(k); i >= 0 {
					raise(i)
				}
			}
		})
	}
	ctx := context.Background()
	var res runResult
	var writes, reads, fetches, unverified, revalidated, violations atomic.Int64
	var firstMu sync.Mutex
	var first []string // the first floor violations
	var announced [writers]atomic.Int64
	stop := make(chan struct{})
	var wwg, rwg sync.WaitGroup
	for w := range writers {
		wc := newClusterWriter(t, cl)
		wwg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			version := make([]int64, n)
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(n/writers)*writers + w // writer w owns keys ≡ w mod writers
				announced[w].Store(int64(i))
				v := version[i] + 1
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := wc.Do(wctx, wc.B().Set().Key(key(i)).Value(strconv.FormatInt(v, 10)).Build()).Error()
				if err == nil && cfg.wait {
					var got int64
					got, err = wc.Do(wctx, wc.B().Wait().Numreplicas(1).Timeout(1000).Build()).AsInt64()
					if err == nil && got < 1 {
						err = fmt.Errorf("WAIT: %d replicas", got)
					}
				}
				cancel()
				// A write whose outcome is unknown (an error) may still have
				// happened: it bumps the version, but is not acknowledged.
				version[i] = v
				if err != nil {
					time.Sleep(5 * time.Millisecond) // a node is down: do not spin
					continue
				}
				acked[i].Store(v)
				writes.Add(1)
			}
		})
	}
	for ci, c := range caches {
		for r := range readersPer {
			rwg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ci*readersPer+r), 8))
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := rng.IntN(n)
					if cfg.favourHot && rng.IntN(2) == 0 {
						i = int(announced[rng.IntN(writers)].Load())
					}
					floor := floors[ci][i].Load()
					it, fresh, ok := c.Get(key(i))
					reads.Add(1)
					switch {
					case ok && fresh:
					case ok: // unverified: revalidate as tiered does
						unverified.Add(1)
						tk := c.Reserve(key(i))
						rctx, cancel := context.WithTimeout(ctx, time.Second)
						raw, err := c.Client().Do(rctx, c.Client().B().Get().Key(key(i)).Build()).AsBytes()
						cancel()
						if err != nil {
							time.Sleep(time.Millisecond)
							continue
						}
						v, _ := strconv.ParseInt(string(raw), 10, 64)
						if uint64(v) == it.Version {
							if c.Revalidate(tk, key(i), it.Version) {
								revalidated.Add(1)
							}
						} else {
							c.Fill(tk, key(i), Item{Value: raw, Version: uint64(v)}, true)
						}
						it, fresh, ok = Item{Value: raw, Version: uint64(v)}, true, true
					default:
						fetches.Add(1)
						rctx, cancel := context.WithTimeout(ctx, time.Second)
						var err error
						it, ok, err = c.Fetch(rctx, key(i))
						cancel()
						if err != nil {
							time.Sleep(time.Millisecond) // a node is down: do not spin
							continue
						}
						fresh = ok
					}
					if !fresh || !ok {
						continue
					}
					if v, _ := strconv.ParseInt(string(it.Value), 10, 64); v < floor {
						if violations.Add(1) <= 3 {
							firstMu.Lock()
							first = append(first, fmt.Sprintf("cache %d read %s = %d below its floor %d", ci, key(i), v, floor))
							firstMu.Unlock()
						}
					}
				}
			})
		}
	}
	if cfg.fault != nil {
		cfg.fault()
	} else {
		time.Sleep(cfg.d) // the run's length, not synchronisation
	}
	// Let the run go on a little on the changed cluster.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wwg.Wait()
	rwg.Wait()

	w := newClusterWriter(t, cl)
	drainCluster(t, cl, w, cfg.prefix, caches...)
	for i := range n {
		latest, err := w.Do(ctx, w.B().Get().Key(key(i)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			latest = ""
		} else if err != nil {
			t.Fatal(err)
		}
		for _, c := range caches {
			if it, fresh, ok := c.Get(key(i)); ok && fresh && string(it.Value) != latest {
				res.staleAfterDrain++
			}
		}
	}
	for _, c := range caches {
		st := c.Stats()
		res.epochBumps += st.EpochBumps
		res.refused += st.Refused
	}
	res.writes, res.reads, res.fetches = writes.Load(), reads.Load(), fetches.Load()
	res.unverified, res.revalidated = unverified.Load(), revalidated.Load()
	res.floorViolations = int(violations.Load())
	res.firstViolations = first
	return res
}

// BenchmarkClusterHit compares a memory hit of a cache on a cluster with
// one on a single server, in the same run: hits never touch the network, so
// they cost the same.
func BenchmarkClusterHit(b *testing.B) {
	cl := redistest.StartCluster(b, nil)
	srv := redistest.Start(b, nil)
	for _, tc := range []struct {
		name string
		c    *Cache
	}{
		{"single", newRedisCache(b, srv, &Options{Prefixes: []string{"b:"}})},
		{"cluster", newClusterCache(b, cl, &Options{Prefixes: []string{"b:"}})},
	} {
		const n = 1024
		for i := range n {
			fetchOrSet(b, tc.c, "b:"+strconv.Itoa(i))
		}
		keys := make([]string, n)
		for i := range keys {
			keys[i] = "b:" + strconv.Itoa(i)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			hits := 0
			i := 0
			for b.Loop() {
				if _, fresh, ok := tc.c.Get(keys[i&(n-1)]); ok && fresh {
					hits++
				}
				i++
			}
			b.ReportMetric(float64(hits)/float64(i), "hit-ratio")
		})
	}
}

// fetchOrSet stores key in Redis (if missing) and caches it.
func fetchOrSet(tb testing.TB, c *Cache, key string) {
	tb.Helper()
	if err := c.Set(context.Background(), key, Item{Value: []byte("1"), Version: 1}, []byte("1"), 0); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := c.Fetch(context.Background(), key); err != nil {
		tb.Fatal(err)
	}
}

// TestClusterRevalidate10k measures revalidating 10,000 unverified entries
// spread over the three shards: one pipelined GET per key (rueidis splits
// the pipeline per node), then Revalidate. Every entry comes back fresh.
func TestClusterRevalidate10k(t *testing.T) {
	const n = 10_000
	cl := redistest.StartCluster(t, nil)
	w := newClusterWriter(t, cl)
	ctx := context.Background()
	keys := make([]string, n)
	cmds := make(rueidis.Commands, n)
	for i := range keys {
		keys[i] = "r:" + strconv.Itoa(i)
		cmds[i] = w.B().Set().Key(keys[i]).Value(strconv.Itoa(i + 1)).Build()
	}
	for _, r := range w.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			t.Fatal(err)
		}
	}
	c := newClusterCache(t, cl, &Options{Prefixes: []string{"r:"}, KeepUnverified: true, MaxBytes: 64 << 20})
	// A connection rueidis closes (a seed it no longer needs, a topology
	// refresh) bumps the epoch and refuses every ticket taken before: then
	// the whole pass is run again, as tiered's revalidator does.
	for attempt := 0; ; attempt++ {
		epoch := c.Epoch()
		promoted, pending, took := revalidateAll10k(t, c, keys)
		if promoted == n || c.Epoch() == epoch || attempt == 3 {
			if len(pending) != n || promoted != n {
				t.Fatalf("unverified %d, promoted %d; want %d and %d", len(pending), promoted, n, n)
			}
			t.Logf("revalidated %d entries over 3 shards in %v (attempt %d)", promoted, took, attempt+1)
			return
		}
	}
}

func revalidateAll10k(t *testing.T, c *Cache, keys []string) (promoted int, pending []string, took time.Duration) {
	ctx := context.Background()
	for i, k := range keys { // as a warm restart from disk: unverified
		it := Item{Value: []byte(strconv.Itoa(i + 1)), Version: uint64(i + 1)}
		for try := 0; !c.Fill(c.Reserve(k), k, it, false); try++ {
			if try == 3 { // an epoch bump between Reserve and Fill refuses it once
				t.Fatalf("Fill %s refused", k)
			}
		}
	}
	start := time.Now()
	c.Unverified(func(key string, _ uint64) bool { pending = append(pending, key); return true })
	tickets := make([]Ticket, len(pending))
	gets := make(rueidis.Commands, len(pending))
	cc := c.Client()
	for i, k := range pending {
		tickets[i] = c.Reserve(k)
		gets[i] = cc.B().Get().Key(k).Build()
	}
	for i, r := range cc.DoMulti(ctx, gets...) {
		raw, err := r.ToString()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseUint(raw, 10, 64)
		if c.Revalidate(tickets[i], pending[i], v) {
			promoted++
		}
	}
	return promoted, pending, time.Since(start)
}

// trackingConns counts, per address, the connections that sent CLIENT
// TRACKING, and how many of those closed.
type trackingConns struct {
	mu             sync.Mutex
	opened, closed map[string]int
}

type sniffConn struct {
	net.Conn
	tc       *trackingConns
	addr     string
	tracking atomic.Bool
	closed   atomic.Bool // rueidis may close a connection more than once
}

func (s *sniffConn) Write(p []byte) (int, error) {
	if !s.tracking.Load() && bytes.Contains(p, []byte("TRACKING")) {
		s.tracking.Store(true)
		s.tc.mu.Lock()
		s.tc.opened[s.addr]++
		s.tc.mu.Unlock()
	}
	return s.Conn.Write(p)
}

func (s *sniffConn) Close() error {
	if s.tracking.Load() && !s.closed.Swap(true) {
		s.tc.mu.Lock()
		s.tc.closed[s.addr]++
		s.tc.mu.Unlock()
	}
	return s.Conn.Close()
}

// TestClusterStartArmsEachPrimaryOnce: given every node as a seed, the
// cache's client arms tracking on each primary once and closes none of
// those connections at start. (rueidis dials every seed at once; a later
// dial whose node its first slot refresh had already given a connection
// was closed, a null invalidation: two epoch bumps moments after every
// cluster start, so Sets made then kept no local copy.)
func TestClusterStartArmsEachPrimaryOnce(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	tc := &trackingConns{opened: map[string]int{}, closed: map[string]int{}}
	var d net.Dialer
	ro := &rueidis.ClientOption{InitAddress: cl.Addrs(), DialCtxFn: func(ctx context.Context, addr string, _ *net.Dialer, _ *tls.Config) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &sniffConn{Conn: c, tc: tc, addr: addr}, nil
	}}
	c := newClusterCache(t, cl, &Options{Redis: ro})
	ctx := t.Context()
	nodes := c.Client().Nodes()
	for _, p := range cl.Primaries() {
		n, ok := nodes[p.Addr()]
		if !ok {
			t.Fatalf("no connection to primary %s", p.Addr())
		}
		if err := n.Do(ctx, n.B().Ping().Build()).Error(); err != nil {
			t.Fatalf("PING %s: %v", p.Addr(), err)
		}
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, p := range cl.Primaries() {
		if n := tc.opened[p.Addr()]; n != 1 {
			t.Errorf("primary %s: %d connections armed tracking, want 1", p.Addr(), n)
		}
	}
	for addr, n := range tc.closed {
		t.Errorf("%s: %d connections that armed tracking closed at start", addr, n)
	}
	if n := c.Stats().EpochBumps; n != 0 {
		t.Errorf("EpochBumps = %d right after start, want 0", n)
	}
}

// TestClusterStartsWithAPrimaryDown: with one primary down when the cache
// starts (and the cluster set to serve the slots it still covers), New
// succeeds and the keys of the other primaries are read and cached; only
// the dead primary's keys fail. (The start-up checks, INFO and the ACL
// dry run, went to any node of the cluster client, the dead one included,
// and New failed with ErrUnavailable.)
func TestClusterStartsWithAPrimaryDown(t *testing.T) {
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Args: []string{"--cluster-require-full-coverage", "no"}})
	slots := cl.SlotMap()
	w := newClusterWriter(t, cl)
	ctx := t.Context()
	dead := slots[0]
	var live *redistest.ClusterNode
	for _, p := range cl.Primaries() {
		if p != dead {
			live = p
			break
		}
	}
	liveKey, deadKey := keysOn(slots, live, "k:", 1)[0], keysOn(slots, dead, "k:", 1)[0]
	if err := w.Do(ctx, w.B().Set().Key(liveKey).Value("7").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	dead.Kill()
	c := newClusterCache(t, cl, nil)
	it, ok, err := c.Fetch(ctx, liveKey)
	if err != nil || !ok || string(it.Value) != "7" {
		t.Fatalf("Fetch(%s) on a live primary = %q, %v, %v; want 7", liveKey, it.Value, ok, err)
	}
	if _, fresh, ok := c.Get(liveKey); !ok || !fresh {
		t.Errorf("%s not cached after its Fetch (ok %v, fresh %v)", liveKey, ok, fresh)
	}
	if _, _, err := c.Fetch(ctx, deadKey); err == nil {
		t.Errorf("Fetch(%s) on the dead primary succeeded", deadKey)
	}
}
