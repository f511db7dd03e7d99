package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tiered"
)

// Black-box probes of issue 11, finding 1 ("stale forever in the writing
// process"): a process calls tiered.Set(k, "mine") while a client that is not
// thermos reacts to the keyspace event of that SET by overwriting or deleting
// k at once. Once the reactions are done, after 1 s and after 6 s, no key may
// be served by the cache with a value Redis no longer holds.

const (
	probeKeys     = 2000
	keyEventSet   = "__keyevent@0__:set"
	notifyAllArgs = "KEA" // keyspace and keyevent notifications for every class
)

// probeEnv is where a probe runs: a single server or a cluster.
type probeEnv struct {
	addrs []string       // for the cache and the plain client
	subs  []string       // nodes to SUBSCRIBE on: keyevent notifications are node-local
	plain rueidis.Client // writes and reads that are not thermos code
}

// probeCase is one route and one external reaction.
type probeCase struct {
	tiers tiered.Tier
	raw   bool
	del   bool // the reaction deletes; otherwise it SETs "theirs"
}

func (c probeCase) name() string {
	n := strings.ReplaceAll(c.tiers.String(), "+", "|")
	if c.raw {
		n += "/raw"
	} else {
		n += "/envelope"
	}
	if c.del {
		return n + "/external-DEL"
	}
	return n + "/external-SET"
}

func probeCases() []probeCase {
	var cs []probeCase
	for _, tiers := range []tiered.Tier{tiered.Memory | tiered.Disk | tiered.Redis, tiered.Memory | tiered.Redis} {
		for _, raw := range []bool{false, true} {
			for _, del := range []bool{false, true} {
				cs = append(cs, probeCase{tiers: tiers, raw: raw, del: del})
			}
		}
	}
	return cs
}

func TestProbeSetRacingExternalWrite(t *testing.T) {
	s := redistest.Start(t, &redistest.Options{Args: []string{"--notify-keyspace-events", notifyAllArgs}})
	env := probeEnv{addrs: []string{s.Addr()}, subs: []string{s.Addr()}, plain: plainClient(t, []string{s.Addr()})}
	for i, c := range probeCases() {
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			probe(t, env, c, fmt.Sprintf("p%d:", i))
		})
	}
}

func TestProbeSetRacingExternalWriteCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster probe skipped in -short mode")
	}
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Args: []string{"--notify-keyspace-events", notifyAllArgs}})
	var subs []string
	for _, n := range cl.Primaries() {
		subs = append(subs, n.Addr())
	}
	env := probeEnv{addrs: cl.Addrs(), subs: subs, plain: plainClient(t, cl.Addrs())}
	for i, c := range probeCases() {
		if c.tiers&tiered.Disk == 0 {
			continue // the control routes run on the single server
		}
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			probe(t, env, c, fmt.Sprintf("c%d:", i))
		})
	}
}

func plainClient(t testing.TB, addrs []string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("plain client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// quietLogger drops the cache's warnings: the probes count what matters.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// envelopeOf is what another writer of enveloped values stores: payload v,
// an hour to live, a random version.
func envelopeOf(v string) string {
	now := time.Now().UnixNano()
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: rand.Uint64()}, Payload: []byte(v)}
	return string(e.Append(nil))
}

// payloadOf decodes what Redis holds for a key of an enveloped (or raw)
// route into what tiered serves.
func payloadOf(raw bool, b string) (string, error) {
	if raw {
		return b, nil
	}
	e, err := envelope.Decode([]byte(b))
	if err != nil {
		return "", err
	}
	return string(e.Payload), nil
}

func probe(t *testing.T, env probeEnv, c probeCase, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache, err := tiered.Open(ctx, &tiered.Options{
		Routes: []tiered.Route{{Prefix: prefix, Tiers: c.tiers, Raw: c.raw, TTL: time.Hour, Beta: -1}},
		Redis:  &rueidis.ClientOption{InitAddress: env.addrs, ConnWriteTimeout: testConnWriteTimeout},
		Dir:    t.TempDir(),
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer cache.Close()
	waitCondition(t, 30*time.Second, "the cache to accept a Set", func() bool {
		return cache.Set(ctx, prefix+"warmup", []byte("x"), 0) == nil
	})

	theirs := "theirs"
	if !c.raw {
		theirs = envelopeOf("theirs")
	}
	keys := make([]string, probeKeys)
	want := make(map[string]bool, probeKeys)
	for i := range keys {
		keys[i] = prefix + "k" + strconv.Itoa(i)
		want[keys[i]] = true
	}

	// The reactor runs in a process of its own, so that its reaction is
	// as quick as another program's would be, not delayed by this one's
	// scheduler.
	re := startChild(t, "reactor-"+strings.TrimSuffix(prefix, ":"), "reactor", reactorConfig{
		Addrs: env.addrs, Subs: env.subs, Prefix: prefix, Keys: probeKeys, Del: c.del, Theirs: []byte(theirs),
	})
	// The writing process: several goroutines, each Set one key at a time
	// and read it back, as a writer that reads its own writes does; one
	// more goroutine keeps reading the keys set last.
	var setErrs atomic.Int64
	var last atomic.Int64 // highest index set so far
	var wg sync.WaitGroup
	const writers = 16
	for w := range writers {
		wg.Go(func() {
			for i := w; i < len(keys); i += writers {
				if err := cache.Set(ctx, keys[i], []byte("mine"), 0); err != nil {
					setErrs.Add(1)
				}
				_, _, _ = cache.Get(ctx, keys[i])
				last.Store(int64(i))
			}
		})
	}
	readCtx, stopReads := context.WithCancel(ctx)
	var reads sync.WaitGroup
	reads.Go(func() {
		for j := 0; readCtx.Err() == nil; j++ {
			i := int(last.Load()) - j%32
			if i >= 0 {
				_, _, _ = cache.Get(readCtx, keys[i])
			}
		}
	})
	wg.Wait()
	stopReads()
	reads.Wait()
	if n := setErrs.Load(); n != 0 {
		t.Fatalf("%d of %d Sets failed", n, probeKeys)
	}
	if l := re.next(60 * time.Second); l != "done 0" {
		t.Fatalf("reactor: %q, want \"done 0\" (every key reacted to, no write failed)", l)
	}
	reactedAt := time.Now()
	re.quit(10 * time.Second)

	for _, after := range []time.Duration{time.Second, 6 * time.Second} {
		time.Sleep(time.Until(reactedAt.Add(after))) // the wait is what is measured
		stale, errs, example := staleKeys(ctx, cache, env.plain, c.raw, keys)
		t.Logf("%s: %v after the external writes: %d of %d keys served a value Redis no longer holds (%d read errors)%s",
			c.name(), after, stale, probeKeys, errs, example)
		if stale != 0 || errs != 0 {
			st := cache.Stats()
			t.Errorf("%v after the external writes: %d of %d keys stale, %d read errors, want 0 (epoch bumps %d, passes %d, revalidated %d, dropped %d, disk writes dropped %d)",
				after, stale, probeKeys, errs, st.EpochBumps, st.RevalidationPasses, st.Revalidated, st.Dropped, st.DiskWritesDropped)
		}
	}
}

// staleKeys counts the keys the cache serves with a value Redis does not
// hold (Redis read first: it no longer changes).
func staleKeys(ctx context.Context, cache *tiered.Cache, plain rueidis.Client, raw bool, keys []string) (stale, errs int, example string) {
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = plain.B().Get().Key(k).Build()
	}
	res := plain.DoMulti(ctx, cmds...)
	for i, k := range keys {
		rv, rerr := res[i].ToString()
		inRedis := rerr == nil
		if rerr != nil && !rueidis.IsRedisNil(rerr) {
			errs++
			continue
		}
		if inRedis {
			if rv, rerr = payloadOf(raw, rv); rerr != nil {
				errs++
				continue
			}
		}
		var srcs tiered.Sources
		v, ok, err := cache.Get(tiered.WithSources(ctx, &srcs), k)
		if err != nil {
			errs++
			continue
		}
		if ok && (!inRedis || string(v) != rv) {
			if stale == 0 {
				redis := "nothing"
				if inRedis {
					redis = strconv.Quote(rv)
				}
				src, _ := srcs.Source(k)
				example = fmt.Sprintf("; e.g. %s: cache %q from %v, redis %s", k, v, src, redis)
			}
			stale++
		}
	}
	return stale, errs, example
}

// waitCondition polls cond until it holds, failing t after timeout.
func waitCondition(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling another process
	}
}

// reactorConfig configures the reactor role.
type reactorConfig struct {
	Addrs  []string // for the writes
	Subs   []string // nodes to subscribe on
	Prefix string   // keys are Prefix+"k"+i
	Keys   int
	Del    bool   // delete; otherwise SET Theirs
	Theirs []byte // what a SET writes
}

// runReactor is the reactor role: it subscribes to SET events on every node
// in Subs and, the first time it sees one for a probe key, deletes or
// overwrites that key at once. It says "ready" once every subscription is
// live and "done N" (N failed writes) once it has reacted to every key.
func runReactor(rio *roleIO) error {
	var cfg reactorConfig
	if err := roleConfig(&cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: cfg.Addrs, DisableCache: true})
	if err != nil {
		return err
	}
	defer wc.Close()
	want := make(map[string]bool, cfg.Keys)
	for i := range cfg.Keys {
		want[cfg.Prefix+"k"+strconv.Itoa(i)] = true
	}
	var mu sync.Mutex
	done := make(map[string]bool, cfg.Keys)
	var errs atomic.Int64
	finished := make(chan struct{})
	react := func(k string) {
		mu.Lock()
		first := !done[k]
		done[k] = true
		n := len(done)
		mu.Unlock()
		if !first {
			return // our own reaction's SET event
		}
		var cmd rueidis.Completed
		if cfg.Del {
			cmd = wc.B().Del().Key(k).Build()
		} else {
			cmd = wc.B().Set().Key(k).Value(rueidis.BinaryString(cfg.Theirs)).Build()
		}
		if err := wc.Do(ctx, cmd).Error(); err != nil {
			errs.Add(1)
		}
		if n == cfg.Keys {
			close(finished)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, addr := range cfg.Subs {
		sc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
		if err != nil {
			return err
		}
		defer sc.Close()
		ping := cfg.Prefix + "ping@" + addr + "/"
		ready := make(chan struct{}, 1)
		// A pubsub handler must not block: each event is handled on a
		// goroutine of its own, at once.
		wg.Go(func() {
			_ = sc.Receive(ctx, sc.B().Subscribe().Channel(keyEventSet).Build(), func(m rueidis.PubSubMessage) {
				switch {
				case strings.HasPrefix(m.Message, ping):
					select {
					case ready <- struct{}{}:
					default:
					}
				case want[m.Message]:
					go react(m.Message)
				}
			})
		})
		// On a cluster only the node owning a key's slot sends its event:
		// find a ping key addr owns (the others answer MOVED), and write it
		// until the subscription is live.
		owned := ""
		for j := 0; owned == "" && j < 10000; j++ {
			k := ping + strconv.Itoa(j)
			if sc.Do(ctx, sc.B().Set().Key(k).Value("1").Build()).Error() == nil {
				owned = k
			}
		}
		if owned == "" {
			return fmt.Errorf("no key owned by %s", addr)
		}
		deadline := time.Now().Add(15 * time.Second)
		for live := false; !live; {
			if time.Now().After(deadline) {
				return fmt.Errorf("subscription on %s not live after 15s", addr)
			}
			_ = sc.Do(ctx, sc.B().Set().Key(owned).Value("1").Build()).Error()
			select {
			case <-ready:
				live = true
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	rio.say("ready")
	cmds := make(chan string)
	go func() {
		for {
			c := rio.command()
			cmds <- c
			if c == "quit" {
				return
			}
		}
	}()
	for {
		select {
		case <-finished:
			rio.say("done %d", errs.Load())
			finished = nil
		case c := <-cmds:
			if c == "quit" {
				return nil
			}
		}
	}
}
