package tiered

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/keyslot"
	"github.com/thermoscache/thermos/internal/redistest"
)

// Issue 7's acceptance tests for tiered on a local Redis Cluster
// (internal/redistest.StartCluster: three primaries, with one replica each
// where a failover or the primaries-only SCAN needs one). The caches are
// given every node's address; rueidis finds the cluster.

// clusterOpts returns client options for a cache on cl.
func clusterOpts(cl *redistest.Cluster) *rueidis.ClientOption {
	return &rueidis.ClientOption{InitAddress: cl.Addrs()}
}

// openClusterT opens a cache on a cluster and waits until its client is
// connected in cluster mode.
func openClusterT(t testing.TB, o *Options) *Cache {
	t.Helper()
	c := openT(t, o)
	waitFor(t, 15*time.Second, func() bool { return c.mem.Client() != nil }, "the cache's cluster client")
	if m := c.mem.Client().Mode(); m != rueidis.ClientModeCluster {
		t.Fatalf("client mode = %v, want cluster", m)
	}
	return c
}

// clusterClient is a plain cluster client (no tracking), for writes and
// deletes by another program.
func clusterClient(t testing.TB, cl *redistest.Cluster) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: cl.Addrs(), DisableCache: true})
	if err != nil {
		t.Fatalf("cluster client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// doAll runs cmds through c (rueidis splits them per slot owner) and fails
// t on the first error; it returns the replies.
func doAll(t testing.TB, c rueidis.Client, cmds rueidis.Commands) []rueidis.RedisResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := c.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			t.Fatalf("redis: %v", err)
		}
	}
	return res
}

// keyOn returns the first key prefix+N served by node, per slots.
func keyOn(slots []*redistest.ClusterNode, node *redistest.ClusterNode, prefix string) string {
	for i := 0; ; i++ {
		if k := prefix + strconv.Itoa(i); slots[keyslot.Of(k)] == node {
			return k
		}
	}
}

// shardCounts returns how many of keys each primary serves, by address.
func shardCounts(slots []*redistest.ClusterNode, keys []string) map[string]int {
	m := make(map[string]int)
	for _, k := range keys {
		m[slots[keyslot.Of(k)].Addr()]++
	}
	return m
}

// TestClusterRestartNeverServesChangedKeys is the restart acceptance test
// (TestRestartNeverServesChangedKeys), unchanged, on a 3-primary cluster:
// the 10,000 keys spread over every shard, and the external writes and
// deletes go through a cluster client (MSET and DEL across slots are
// refused by a cluster).
func TestClusterRestartNeverServesChangedKeys(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	w := clusterClient(t, cl)
	slots := cl.SlotMap()
	all := make([]string, 10_000)
	for i := range all {
		all[i] = restartKey(i)
	}
	spread := shardCounts(slots, all)
	if len(spread) != len(cl.Primaries()) {
		t.Fatalf("the restart keys fall on %d shards, want all %d: %v", len(spread), len(cl.Primaries()), spread)
	}
	st := testRestart(t, restartRedis{
		opts:   func() *rueidis.ClientOption { return clusterOpts(cl) },
		settle: func(t *testing.T, c *Cache) { replicaBarrier(t, cl, c, c) },
		setRaw: func(t *testing.T, pairs []string) {
			t.Helper()
			cmds := make(rueidis.Commands, 0, len(pairs)/2)
			for i := 0; i+1 < len(pairs); i += 2 {
				cmds = append(cmds, w.B().Set().Key(pairs[i]).Value(pairs[i+1]).Build())
			}
			doAll(t, w, cmds)
		},
		del: func(t *testing.T, keys []string) int {
			t.Helper()
			cmds := make(rueidis.Commands, len(keys))
			for i, k := range keys {
				cmds[i] = w.B().Del().Key(k).Build()
			}
			n := 0
			for _, r := range doAll(t, w, cmds) {
				d, _ := r.AsInt64()
				n += int(d)
			}
			return n
		},
	})
	t.Logf("cluster: revalidation pass over %d keys on %d shards %v took %v (revalidated %d, dropped %d)",
		len(all), len(spread), spread, st.LastRevalidation, st.Revalidated, st.Dropped)
}

// TestClusterFailoverNoOldValues kills a primary (SIGKILL) while two tiered
// instances read and write, and its replica is promoted. Each instance has
// a floor per key: when it hears an invalidation of the key (or an epoch
// bump), or acknowledges its own write of it, the floor rises to the latest
// acknowledged version. A read that starts after that must not return an
// older version. After the failover every instance is drained (a sentinel
// written on every primary, heard by both) and must serve exactly what
// Redis holds.
//
// Redis replicates asynchronously: a write acknowledged by the killed
// primary but not yet replicated is lost by Redis itself. Such keys are
// counted and reported, and left out of the floor check (a cache that
// serves what Redis holds is right there).
func TestClusterFailoverNoOldValues(t *testing.T) {
	const keys = 300
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Replicas: 1})
	ctx := context.Background()
	route := Route{Prefix: "fo:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}
	diskRoute := route
	diskRoute.Tiers |= Disk
	caches := []*Cache{
		openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Routes: []Route{route}}),
		openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Dir: t.TempDir(), Routes: []Route{diskRoute}}),
	}
	// truth reads Redis only: what the cluster holds, decoded.
	truth := openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Routes: []Route{{Prefix: "fo:", Tiers: Redis, TTL: time.Hour, Beta: -1}}})
	key := func(i int) string { return "fo:" + strconv.Itoa(i) }
	index := func(k string) int {
		i, err := strconv.Atoi(strings.TrimPrefix(k, "fo:"))
		if err != nil || !strings.HasPrefix(k, "fo:") || i >= keys {
			return -1
		}
		return i
	}

	acked := make([]atomic.Int64, keys)
	floors := make([][]atomic.Int64, len(caches))
	raise := func(ci, i int) {
		a := acked[i].Load()
		fl := &floors[ci][i]
		for f := fl.Load(); a > f && !fl.CompareAndSwap(f, a); f = fl.Load() {
		}
	}
	var heard sync.Map // "cache/key" of every invalidation heard
	for ci, c := range caches {
		floors[ci] = make([]atomic.Int64, keys)
		// Registered after the cache's own listener: the entry is gone
		// before the floor rises.
		c.mem.OnInvalidate(func(ks []string, bump bool) {
			if bump {
				for i := range keys {
					raise(ci, i)
				}
				return
			}
			for _, k := range ks {
				heard.Store(strconv.Itoa(ci)+"/"+k, true)
				if i := index(k); i >= 0 {
					raise(ci, i)
				}
			}
		})
	}

	type violation struct {
		ci, key      int
		got, floor   int64
		afterFailure bool
	}
	var (
		writes, writeErrs, reads, readErrs atomic.Int64
		afterWrites                        atomic.Int64 // acknowledged after the promotion
		failedOver                         atomic.Bool
		vmu                                sync.Mutex
		violations                         []violation
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Writer w writes the keys ≡ w mod 2 through cache w.
	for w, c := range caches {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			version := make([]int64, keys)
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(keys/2)*2 + w
				version[i]++ // an unacknowledged write may have happened
				v := version[i]
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := c.Set(wctx, key(i), []byte(strconv.FormatInt(v, 10)), 0)
				cancel()
				if err != nil {
					writeErrs.Add(1)
					time.Sleep(5 * time.Millisecond) // a shard is down: do not spin
					continue
				}
				acked[i].Store(v)
				raise(w, i) // the writer reads its own write at once
				writes.Add(1)
				if failedOver.Load() {
					afterWrites.Add(1)
				}
			}
		})
	}
	for ci, c := range caches {
		for r := range 3 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(r)+10))
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := rng.IntN(keys)
					after := failedOver.Load()
					floor := floors[ci][i].Load()
					rctx, cancel := context.WithTimeout(ctx, time.Second)
					v, ok, err := c.Get(rctx, key(i))
					cancel()
					reads.Add(1)
					if err != nil {
						readErrs.Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					if !ok {
						continue
					}
					if got, _ := strconv.ParseInt(string(v), 10, 64); got < floor {
						vmu.Lock()
						violations = append(violations, violation{ci, i, got, floor, after})
						vmu.Unlock()
					}
				}
			})
		}
	}
	stopAll := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopAll)

	// Run until every key was written at least once on average and both
	// caches serve from memory.
	waitFor(t, 30*time.Second, func() bool {
		for _, c := range caches {
			if c.Stats().Routes[0].MemoryHits == 0 {
				return false
			}
		}
		return writes.Load() >= 2*keys
	}, "writes and memory hits before the fault")
	victim := cl.Primaries()[0]
	start := time.Now()
	promoted := cl.KillPrimary(victim)
	failover := time.Since(start)
	failedOver.Store(true)
	// Go on until the writers have been acknowledged plenty of times on the
	// new topology, the promoted shard included.
	slots := cl.SlotMap()
	onPromoted := keyOn(slots, promoted, "fo:")
	before := acked[index(onPromoted)].Load()
	waitFor(t, 30*time.Second, func() bool {
		return afterWrites.Load() >= 2*keys && acked[index(onPromoted)].Load() > before
	}, "acknowledged writes after the failover")
	stopAll()

	// Drain: a sentinel per primary, heard by both caches, means every
	// earlier write on that primary was heard too (pushes are ordered per
	// connection) and tracking is armed on the promoted node.
	w := clusterClient(t, cl)
	for _, p := range cl.Primaries() {
		s := keyOn(slots, p, "fo:sentinel:")
		doAll(t, w, rueidis.Commands{w.B().Set().Key(s).Value("x").Build()})
		for ci := range caches {
			waitFor(t, 15*time.Second, func() bool { _, ok := heard.Load(strconv.Itoa(ci) + "/" + s); return ok },
				fmt.Sprintf("cache %d to hear the sentinel %s on %s", ci, s, p.Addr()))
		}
	}

	lost := make(map[int]bool) // acknowledged writes Redis lost in the failover
	stale := 0
	for i := range keys {
		want, ok, err := truth.Get(ctx, key(i))
		if err != nil {
			t.Fatalf("truth Get(%s): %v", key(i), err)
		}
		var inRedis int64
		if ok {
			inRedis, _ = strconv.ParseInt(string(want), 10, 64)
		}
		if inRedis < acked[i].Load() {
			lost[i] = true
		}
		for ci, c := range caches {
			v, ok2, err := c.Get(ctx, key(i))
			if err != nil {
				t.Fatalf("cache %d Get(%s) after the drain: %v", ci, key(i), err)
			}
			if ok2 != ok || !bytes.Equal(v, want) {
				stale++
				if stale <= 5 {
					t.Errorf("cache %d serves %s = %q (%v) after the failover and the drain; Redis holds %q (%v)", ci, key(i), v, ok2, want, ok)
				}
			}
		}
	}
	var during, after int
	for _, v := range violations {
		if lost[v.key] {
			continue
		}
		if v.afterFailure {
			after++
		} else {
			during++
		}
		if during+after <= 5 {
			t.Errorf("cache %d read %s = %d, below its floor %d (the latest acknowledged write it knew of; after the promotion: %v)",
				v.ci, key(v.key), v.got, v.floor, v.afterFailure)
		}
	}
	t.Logf("SIGKILL of %s to promotion of %s: %v; %d acknowledged writes (%d after the promotion), %d failed; %d reads, %d errors; "+
		"old values served: %d before, %d after the promotion completed, %d after the drain; %d acknowledged writes lost by Redis itself",
		victim.Addr(), promoted.Addr(), failover, writes.Load(), afterWrites.Load(), writeErrs.Load(), reads.Load(), readErrs.Load(),
		during, after, stale, len(lost))
	for ci, c := range caches {
		st := c.Stats()
		rs := st.Routes[0]
		t.Logf("cache %d (%s): EpochBumps %d, Revalidated %d, Dropped %d (background); route: UnverifiedReads %d, Revalidated %d, Dropped %d, MemoryHits %d, RedisHits %d",
			ci, rs.Tiers, st.EpochBumps, st.Revalidated, st.Dropped, rs.UnverifiedReads, rs.Revalidated, rs.Dropped, rs.MemoryHits, rs.RedisHits)
		if st.EpochBumps == 0 {
			t.Errorf("cache %d: no epoch bump although its connection to the killed primary dropped", ci)
		}
	}
}

// TestClusterInvalidatePrefix: InvalidatePrefix on one instance removes the
// prefix from every primary (and so every replica), from its own memory and
// disk, and, through the invalidations, from the other instance's memory.
// Keys under another prefix stay everywhere. The count it returns is each
// key once: replicas are not scanned.
func TestClusterInvalidatePrefix(t *testing.T) {
	const n, kept = 300, 30
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Replicas: 1})
	ctx := context.Background()
	routes := []Route{
		{Prefix: "ip:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1},
		{Prefix: "keep:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1},
	}
	a := openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Dir: t.TempDir(), Routes: routes})
	b := openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Dir: t.TempDir(), Routes: routes})
	var gone, keep []string
	for i := range n {
		gone = append(gone, "ip:"+strconv.Itoa(i))
	}
	for i := range kept {
		keep = append(keep, "keep:"+strconv.Itoa(i))
	}
	slots := cl.SlotMap()
	primaries := cl.Primaries()
	if s := shardCounts(slots, gone); len(s) != len(primaries) {
		t.Fatalf("the prefix's keys fall on %d shards, want %d: %v", len(s), len(primaries), s)
	}
	every := append(append([]string(nil), gone...), keep...)
	for _, k := range every {
		if err := a.Set(ctx, k, []byte("v:"+k), 0); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
	}
	// Replicas send invalidations too, late: drain them first.
	replicaBarrier(t, cl, a, a, b)
	// Both hold every key in memory, verified. A read whose reply raced
	// with the invalidation of a's write is, rightly, not kept, and an
	// epoch bump (the first topology check) leaves entries unverified until
	// they are revalidated: read again until they are.
	for _, c := range []*Cache{a, b} {
		for _, k := range every {
			waitFor(t, 10*time.Second, func() bool {
				if v, ok := mustGet(t, c, k); !ok || string(v) != "v:"+k {
					t.Fatalf("Get(%s) = %q, %v", k, v, ok)
				}
				_, fresh, ok := c.mem.Get(k)
				return ok && fresh
			}, "the cache to hold "+k+" in memory")
		}
	}

	removed, err := a.InvalidatePrefix(ctx, "ip:")
	if err != nil {
		t.Fatalf("InvalidatePrefix: %v", err)
	}
	if removed != n {
		t.Errorf("InvalidatePrefix removed %d keys, want %d (each key once, primaries only)", removed, n)
	}
	// Redis: no key of the prefix on any node; the others are all there.
	waitFor(t, 15*time.Second, func() bool {
		for _, nd := range cl.Nodes {
			if out := nd.CLI("--scan", "--pattern", "ip:*"); out != "" {
				return false
			}
		}
		return true
	}, "every primary and replica to hold no ip: key")
	var keptInRedis int
	for _, p := range primaries {
		if out := p.CLI("--scan", "--pattern", "keep:*"); out != "" {
			keptInRedis += len(strings.Fields(out))
		}
	}
	if keptInRedis != kept {
		t.Errorf("keys under another prefix left in Redis = %d, want %d", keptInRedis, kept)
	}
	// Memory: a's at once, b's once the invalidations arrive.
	for _, k := range gone {
		if _, _, ok := a.mem.Get(k); ok {
			t.Errorf("a still holds %s in memory", k)
		}
	}
	waitFor(t, 15*time.Second, func() bool {
		for _, k := range gone {
			if _, _, ok := b.mem.Get(k); ok {
				return false
			}
		}
		return true
	}, "b to drop every ip: key from memory")
	for _, c := range []*Cache{a, b} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range gone {
			if v, ok := mustGet(t, c, k); ok {
				t.Errorf("%s still served (%q) after InvalidatePrefix", k, v)
			}
		}
		for _, k := range keep {
			det := &Sources{}
			v, ok, err := c.Get(WithSources(ctx, det), k)
			if err != nil || !ok || string(v) != "v:"+k {
				t.Errorf("Get(%s) = %q, %v, %v; want its value", k, v, ok, err)
			}
			if src, _ := det.Source(k); src != SourceMemory {
				t.Errorf("kept key %s served from %v, want memory", k, src)
			}
		}
	}
	// a's disk holds none of them.
	var onDisk int
	if err := a.disk.scan(ctx, "ip:", func(string, []byte, int64) error { onDisk++; return nil }); err != nil {
		t.Fatal(err)
	}
	if onDisk != 0 {
		t.Errorf("a's disk still holds %d ip: keys", onDisk)
	}
}

// replicaBarrier returns once every invalidation the replicas owe caches for
// writer's writes so far has been applied. rueidis keeps a connection,
// armed with BCAST tracking like any other, to every node it dialled: the
// initial addresses (replicas included) and every node a topology refresh
// asks for CLUSTER SLOTS. A replica invalidates a key when it applies the
// write from the replication stream, on that connection, unordered with the
// primary's connection and a replication lag late, even to the writer
// (NOLOOP covers only the writing connection): it would drop an entry read
// (or written) fresh since. WAIT on the writer's connection to each primary
// returns once the replicas applied its writes, so their pushes are queued;
// a PING on each cache's connection to each replica is answered after them,
// and rueidis applies pushes on that connection's reader before the reply.
func replicaBarrier(t testing.TB, cl *redistest.Cluster, writer *Cache, caches ...*Cache) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	wn := writer.mem.Client().Nodes()
	for _, p := range cl.Primaries() {
		reps := cl.Replicas(p)
		if len(reps) == 0 {
			continue
		}
		pc, ok := wn[p.Addr()]
		if !ok {
			t.Fatalf("the writer has no connection to primary %s", p.Addr())
		}
		n, err := pc.Do(ctx, pc.B().Wait().Numreplicas(int64(len(reps))).Timeout(10000).Build()).AsInt64()
		if err != nil || n < int64(len(reps)) {
			t.Fatalf("WAIT %d on %s = %d, %v", len(reps), p.Addr(), n, err)
		}
		for _, c := range caches {
			for _, r := range reps {
				if rc, ok := c.mem.Client().Nodes()[r.Addr()]; ok {
					if err := rc.Do(ctx, rc.B().Ping().Build()).Error(); err != nil {
						t.Fatalf("PING %s: %v", r.Addr(), err)
					}
				}
			}
		}
	}
}

// nodeCalls returns the calls of every data command n served (INFO
// commandstats), leaving out connection upkeep and the topology checks
// (ping, info, client, hello, cluster, command).
func nodeCalls(t testing.TB, n *redistest.Server) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for line := range strings.Lines(n.CLI("INFO", "commandstats")) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, _ := strings.Cut(rest, ":")
		switch strings.SplitN(name, "|", 2)[0] {
		case "ping", "info", "client", "hello", "cluster", "command":
			continue
		}
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

// hitSetup is a cache whose memory holds hitKeys keys, and the servers
// behind it.
type hitSetup struct {
	name  string
	c     *Cache
	nodes []*redistest.Server
	keys  []string
}

const hitKeys = 1024 // a power of two: the loops index with &

// hitSetups opens a memory+Redis cache on a single server and one on a
// 3-primary cluster, each holding hitKeys keys fresh in memory.
func hitSetups(t testing.TB) []hitSetup {
	t.Helper()
	cl := redistest.StartCluster(t, nil)
	srv := redistest.Start(t, nil)
	route := Route{Prefix: "h:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}
	var primaries []*redistest.Server
	for _, p := range cl.Primaries() {
		primaries = append(primaries, p.Server)
	}
	setups := []hitSetup{
		{name: "single", c: openT(t, &Options{Redis: redisOpts(srv), Logger: quietLog, Routes: []Route{route}}), nodes: []*redistest.Server{srv}},
		{name: "cluster", c: openClusterT(t, &Options{Redis: clusterOpts(cl), Logger: quietLog, Routes: []Route{route}}), nodes: primaries},
	}
	ctx := context.Background()
	for i := range setups {
		s := &setups[i]
		for j := range hitKeys {
			k := "h:" + strconv.Itoa(j)
			s.keys = append(s.keys, k)
			if err := s.c.Set(ctx, k, []byte("value:"+k), 0); err != nil {
				t.Fatalf("%s: Set: %v", s.name, err)
			}
		}
		// Every entry fresh: an epoch bump right after Open (a cluster's
		// first topology check) leaves them unverified until revalidated.
		waitFor(t, 15*time.Second, func() bool {
			for _, k := range s.keys {
				if _, fresh, ok := s.c.mem.Get(k); !ok || !fresh {
					mustGet(t, s.c, k)
					return false
				}
			}
			return true
		}, s.name+": every key fresh in memory")
	}
	return setups
}

// TestClusterMemoryHitsStayLocal times memory hits through tiered on a
// cluster and on a single server, and shows they never reach Redis: no
// data command reaches any primary while they run, and every read is
// counted as a memory hit.
func TestClusterMemoryHitsStayLocal(t *testing.T) {
	const reads = 200_000
	ctx := context.Background()
	for _, s := range hitSetups(t) {
		before := make([]map[string]int64, len(s.nodes))
		for i, n := range s.nodes {
			before[i] = nodeCalls(t, n)
		}
		hits0 := s.c.Stats().Routes[0].MemoryHits
		start := time.Now()
		for i := range reads {
			if _, ok, err := s.c.Get(ctx, s.keys[i&(hitKeys-1)]); !ok || err != nil {
				t.Fatalf("%s: Get(%s) = %v, %v", s.name, s.keys[i&(hitKeys-1)], ok, err)
			}
		}
		took := time.Since(start)
		if got := s.c.Stats().Routes[0].MemoryHits - hits0; got != reads {
			t.Errorf("%s: %d memory hits, want %d", s.name, got, reads)
		}
		for i, n := range s.nodes {
			if d := diffStats(before[i], nodeCalls(t, n)); len(d) != 0 {
				t.Errorf("%s: %s served commands during the memory hits: %v", s.name, n.Addr(), d)
			}
		}
		t.Logf("%s (%d primaries): %d memory hits, %.0f ns/op", s.name, len(s.nodes), reads, float64(took.Nanoseconds())/reads)
	}
}

// BenchmarkClusterMemoryHit compares a memory hit through tiered on a
// 3-primary cluster with one on a single server, in the same run.
func BenchmarkClusterMemoryHit(b *testing.B) {
	ctx := context.Background()
	for _, s := range hitSetups(b) {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			hits, i := 0, 0
			for b.Loop() {
				if _, ok, _ := s.c.Get(ctx, s.keys[i&(hitKeys-1)]); ok {
					hits++
				}
				i++
			}
			b.ReportMetric(float64(hits)/float64(i), "hit-ratio")
		})
	}
}

// Environment of a child process of TestClusterStampedeProcesses (the
// test binary run again with -test.run=^TestClusterStampedeChild$).
const (
	stampedeIDEnv    = "TIERED_STAMPEDE_ID"    // the child's number; unset in a normal run
	stampedeAddrsEnv = "TIERED_STAMPEDE_ADDRS" // the cluster's addresses, comma-separated
	stampedeKeysEnv  = "TIERED_STAMPEDE_KEYS"  // one cold key per round, comma-separated
	stampedeGEnv     = "TIERED_STAMPEDE_G"     // goroutines per process

	// stampedeLoadTime is the origin's latency: every goroutine of every
	// process misses within it.
	stampedeLoadTime = 50 * time.Millisecond
	// stampedeWait bounds every wait of a child or of the parent on one.
	stampedeWait = 30 * time.Second
)

// TestClusterStampedeProcesses: 4 processes x 64 goroutines call
// GetOrLoad on one cold key at once, in 3 rounds whose keys live on the 3
// different primaries; the origin (50 ms, counted in Redis) is called once
// per round across the whole fleet.
func TestClusterStampedeProcesses(t *testing.T) {
	const procs, per = 4, 64
	cl := redistest.StartCluster(t, nil)
	c := clusterClient(t, cl)
	ctx := context.Background()
	slots := cl.SlotMap()
	var keys []string
	for _, p := range cl.Primaries() {
		keys = append(keys, keyOn(slots, p, "cold:"))
	}
	type child struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	children := make([]*child, procs)
	for i := range children {
		ch := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestClusterStampedeChild$", "-test.count=1")}
		ch.cmd.Env = append(os.Environ(),
			stampedeIDEnv+"="+strconv.Itoa(i), stampedeAddrsEnv+"="+strings.Join(cl.Addrs(), ","),
			stampedeKeysEnv+"="+strings.Join(keys, ","), stampedeGEnv+"="+strconv.Itoa(per))
		ch.cmd.Stdout, ch.cmd.Stderr = &ch.out, &ch.out
		ch.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := ch.cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = ch.cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = ch.cmd.Process.Kill(); <-done })
		children[i] = ch
	}
	fail := func(format string, args ...any) {
		t.Helper()
		for i, ch := range children {
			t.Logf("child %d output:\n%s", i, ch.out.String())
		}
		t.Fatalf(format, args...)
	}
	calls := make([]int64, len(keys))
	for r, key := range keys {
		goes := make([]string, procs)
		for i := range goes {
			goes[i] = "go"
		}
		if err := c.Do(ctx, c.B().Rpush().Key("go:"+key).Element(goes...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		for range procs {
			kv, err := c.Do(ctx, c.B().Blpop().Key("done:"+key).Timeout(stampedeWait.Seconds()).Build()).AsStrSlice()
			if err != nil || len(kv) != 2 {
				fail("round %d: waiting for the children: %v", r, err)
			}
			if kv[1] != "ok" {
				fail("round %d: a child failed: %s", r, kv[1])
			}
		}
		n, err := c.Do(ctx, c.B().Get().Key("calls:"+key).Build()).AsInt64()
		if err != nil {
			t.Fatalf("round %d: origin calls: %v", r, err)
		}
		calls[r] = n
		if n != 1 {
			t.Errorf("round %d (%s on %s): origin calls = %d, want 1", r, key, slots[keyslot.Of(key)].Addr(), n)
		}
	}
	t.Logf("origin calls per cold key through tiered.GetOrLoad on a cluster, %d processes x %d goroutines, keys on %d shards: %v",
		procs, per, len(keys), calls)
}

// TestClusterStampedeChild is one process of TestClusterStampedeProcesses;
// in a normal run it skips at once.
func TestClusterStampedeChild(t *testing.T) {
	id := os.Getenv(stampedeIDEnv)
	if id == "" {
		t.Skip("a child process of TestClusterStampedeProcesses, run by it")
	}
	addrs := strings.Split(os.Getenv(stampedeAddrsEnv), ",")
	per, _ := strconv.Atoi(os.Getenv(stampedeGEnv))
	ctx := context.Background()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cache, err := Open(ctx, &Options{
		Redis:  &rueidis.ClientOption{InitAddress: addrs},
		Logger: quietLog,
		Routes: []Route{{Prefix: "cold:", Tiers: Memory | Redis, TTL: time.Minute, Beta: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	load := LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		if err := c.Do(ctx, c.B().Incr().Key("calls:"+key).Build()).Error(); err != nil {
			return nil, err
		}
		time.Sleep(stampedeLoadTime)
		return []byte("v:" + key), nil
	})
	for _, key := range strings.Split(os.Getenv(stampedeKeysEnv), ",") {
		if err := c.Do(ctx, c.B().Blpop().Key("go:"+key).Timeout(stampedeWait.Seconds()).Build()).Error(); err != nil {
			t.Fatalf("%s: wait for the start: %v", key, err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, per)
		for range per {
			wg.Go(func() {
				gctx, cancel := context.WithTimeout(ctx, stampedeWait)
				defer cancel()
				v, ok, err := cache.GetOrLoad(gctx, key, load)
				if err == nil && (!ok || string(v) != "v:"+key) {
					err = fmt.Errorf("GetOrLoad(%s) = %q, %v; want v:%s", key, v, ok, key)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		status := "ok"
		if err := errors.Join(all...); err != nil {
			status = "child " + id + ": " + err.Error()
		}
		if err := c.Do(ctx, c.B().Rpush().Key("done:"+key).Element(status).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
}
