package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
)

// The routes of the history check, one register per key. Keys are
// prefix+"k"+i. Raw routes also get APPEND and SETRANGE from plain
// clients; enveloped ones get values enveloped by the plain writer.
var historyRoutes = []struct {
	prefix string
	tiers  tiered.Tier
	raw    bool
}{
	{"mr:", tiered.Memory | tiered.Redis, false},
	{"mdr:", tiered.Memory | tiered.Disk | tiered.Redis, false},
	{"dr:", tiered.Disk | tiered.Redis, false},
	{"raw:", tiered.Memory | tiered.Redis, true},
	{"rawd:", tiered.Memory | tiered.Disk | tiered.Redis, true},
}

// historyKey is one key of the check and whether its route is raw.
type historyKey struct {
	Key string
	Raw bool
}

func historyKeys(perRoute int) []historyKey {
	var ks []historyKey
	for _, r := range historyRoutes {
		for i := range perRoute {
			ks = append(ks, historyKey{r.prefix + "k" + strconv.Itoa(i), r.raw})
		}
	}
	return ks
}

// historyConfig configures a thermos or plain child of the history check.
type historyConfig struct {
	Addr      string
	Dir       string // the thermos child's disk tier
	History   string // its history file
	Proc      string // its name in the history
	Seed      uint64
	Workers   int
	PerRoute  int           // keys per route
	Pace      time.Duration // mean pause between a worker's operations
	OpTimeout time.Duration
	ConnWrite time.Duration // rueidis ConnWriteTimeout
}

// workerLoop runs op in cfg.Workers goroutines until ctx ends, each with
// its own random source; it returns when they all have.
func workerLoop(ctx context.Context, cfg historyConfig, op func(ctx context.Context, w int, rnd *rand.Rand)) {
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			for ctx.Err() == nil {
				op(ctx, w, rnd)
				// Pacing, not waiting on a condition: keeps the load
				// within two shared cores.
				time.Sleep(time.Duration(rnd.Int64N(int64(2*cfg.Pace) + 1)))
			}
		})
	}
	wg.Wait()
}

// serve runs the stop/check/quit protocol: work runs until "stop"; "check"
// calls check (once stopped); "quit" returns.
func serve(rio *roleIO, work func(ctx context.Context), check func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		work(ctx)
		close(done)
	}()
	rio.say("ready")
	for {
		switch c := rio.command(); c {
		case "stop":
			cancel()
			<-done
			rio.say("stopped")
		case "check":
			check()
			rio.say("checked")
		case "quit":
			cancel()
			<-done
			return
		}
	}
}

// checkReply is a thermos child's answer for one key in "check".
type checkReply struct {
	Key     string `json:"key"`
	Present bool   `json:"p"`
	Val     []byte `json:"v"`
	Err     string `json:"err,omitempty"`
}

// cacheOps is what a reading-and-writing process of the history check
// calls: tiered (the thermos role), or plain Redis commands (the direct
// role, a correct "cache" the checker must accept).
type cacheOps interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	GetOrLoad(ctx context.Context, key string, load tiered.Loader) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// direct is cacheOps straight on Redis: GET, SET NX for a load, SET, DEL.
type direct struct {
	cl   rueidis.Client
	raws map[string]bool
}

func (d direct) Get(ctx context.Context, key string) ([]byte, bool, error) {
	s, err := d.cl.Do(ctx, d.cl.B().Get().Key(key).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	p, err := payloadOf(d.raws[key], s)
	return []byte(p), err == nil, err
}

func (d direct) GetOrLoad(ctx context.Context, key string, load tiered.Loader) ([]byte, bool, error) {
	if v, ok, err := d.Get(ctx, key); ok || err != nil {
		return v, ok, err
	}
	v, err := load.Load(ctx, key)
	if err != nil {
		return nil, false, err
	}
	enc := string(v)
	if !d.raws[key] {
		enc = envelopeOf(string(v))
	}
	// NX: like the herd's fenced write, never over another writer's value.
	if err := d.cl.Do(ctx, d.cl.B().Set().Key(key).Value(rueidis.BinaryString([]byte(enc))).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		return nil, false, err
	}
	return v, true, nil
}

func (d direct) Set(ctx context.Context, key string, value []byte, _ time.Duration) error {
	enc := string(value)
	if !d.raws[key] {
		enc = envelopeOf(enc)
	}
	return d.cl.Do(ctx, d.cl.B().Set().Key(key).Value(rueidis.BinaryString([]byte(enc))).Build()).Error()
}

func (d direct) Delete(ctx context.Context, key string) error {
	return d.cl.Do(ctx, d.cl.B().Del().Key(key).Build()).Error()
}

// runThermos is a thermos process: tiered through its public API only
// (isDirect: plain Redis commands instead, recorded as plain reads).
func runThermos(rio *roleIO, isDirect bool) error {
	var cfg historyConfig
	if err := roleConfig(&cfg); err != nil {
		return err
	}
	hr, err := newRecorder(cfg.History)
	if err != nil {
		return err
	}
	defer hr.close()
	var cache cacheOps
	if isDirect {
		cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.Addr}, DisableCache: true, ConnWriteTimeout: cfg.ConnWrite})
		if err != nil {
			return err
		}
		defer cl.Close()
		raws := map[string]bool{}
		for _, k := range historyKeys(cfg.PerRoute) {
			raws[k.Key] = k.Raw
		}
		cache = direct{cl: cl, raws: raws}
	} else {
		var routes []tiered.Route
		for _, r := range historyRoutes {
			// Beta < 0: no early refresh, whose background writes no
			// operation's interval would cover.
			routes = append(routes, tiered.Route{Prefix: r.prefix, Tiers: r.tiers, Raw: r.raw, TTL: time.Hour, Beta: -1})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := tiered.Open(ctx, &tiered.Options{
			Routes: routes,
			Redis:  &rueidis.ClientOption{InitAddress: []string{cfg.Addr}, ConnWriteTimeout: cfg.ConnWrite},
			Dir:    cfg.Dir,
			// A shared load outlives its caller's context by up to
			// LoadTimeout: bounded like every operation, so its write
			// lands within the checker's bound for ambiguous writes.
			LoadTimeout: cfg.OpTimeout,
			Logger:      quietLogger(),
		})
		cancel()
		if err != nil {
			return err
		}
		defer c.Close()
		cache = c
	}
	th := !isDirect
	keys := historyKeys(cfg.PerRoute)
	var seq sync.Mutex
	n := 0
	unique := func() string {
		seq.Lock()
		defer seq.Unlock()
		n++
		return cfg.Proc + "." + strconv.Itoa(n)
	}
	op := func(ctx context.Context, w int, rnd *rand.Rand) {
		k := keys[rnd.IntN(len(keys))].Key
		octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		defer cancel()
		get := func() {
			t0 := now()
			v, ok, err := cache.Get(octx, k)
			t1 := now()
			x := rec{C: w, K: "read", Key: k, Th: th, T0: t0, T1: t1, P: ok, O: v}
			if err != nil {
				x.Err = err.Error()
			}
			hr.op(x)
		}
		// Mostly reads: a stale value must live long enough (no other
		// write to its key for more than δ) to be seen by one.
		switch p := rnd.IntN(100); {
		case p < 85:
			get()
		case p < 90:
			lv := unique()
			// A shared load outlives its caller: a loader called after
			// GetOrLoad returned (its context ended first) still writes,
			// so it is recorded as a load of its own that never returns.
			var mu sync.Mutex
			var called, returned bool
			id := hr.call(rec{C: w, K: "load", Key: k, Th: th, V: []byte(lv)})
			v, ok, err := cache.GetOrLoad(octx, k, tiered.LoaderFunc(func(context.Context, string) ([]byte, error) {
				mu.Lock()
				called = true
				late := returned
				mu.Unlock()
				if late {
					hr.call(rec{C: w, K: "load", Key: k, Th: th, V: []byte(lv)})
				}
				return []byte(lv), nil
			}))
			mu.Lock()
			returned = true
			wasCalled := called
			mu.Unlock()
			hr.ret(id, err, rec{P: ok, O: v, L: wasCalled})
		case p < 97:
			v := unique()
			id := hr.call(rec{C: w, K: "set", Key: k, Th: th, V: []byte(v)})
			err := cache.Set(octx, k, []byte(v), 0)
			hr.ret(id, err, rec{})
			if rnd.IntN(2) == 0 {
				get() // a writer reading its own write
			}
		default:
			id := hr.call(rec{C: w, K: "del", Key: k, Th: th})
			err := cache.Delete(octx, k)
			hr.ret(id, err, rec{})
		}
	}
	check := func() {
		for _, hk := range keys {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.OpTimeout)
			t0 := now()
			v, ok, err := cache.Get(ctx, hk.Key)
			t1 := now()
			cancel()
			x := rec{C: cfg.Workers, K: "read", Key: hk.Key, Th: th, T0: t0, T1: t1, P: ok, O: v}
			r := checkReply{Key: hk.Key, Present: ok, Val: v}
			if err != nil {
				x.Err, r.Err = err.Error(), err.Error()
			}
			hr.op(x)
			b, _ := json.Marshal(r)
			rio.say("%s", b)
		}
	}
	serve(rio, func(ctx context.Context) { workerLoop(ctx, cfg, op) }, check)
	return nil
}

// runPlain is the writer that is not thermos: plain rueidis commands (SET,
// MSET, DEL, PEXPIRE, APPEND, SETRANGE, EVAL), redis-cli, and a reactor
// that overwrites or deletes a key the moment its SET event arrives.
func runPlain(rio *roleIO) error {
	var cfg historyConfig
	if err := roleConfig(&cfg); err != nil {
		return err
	}
	hr, err := newRecorder(cfg.History)
	if err != nil {
		return err
	}
	defer hr.close()
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.Addr}, DisableCache: true, ConnWriteTimeout: cfg.ConnWrite})
	if err != nil {
		return err
	}
	defer cl.Close()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return errors.New("redis-cli not found on PATH: install the Debian package redis-tools")
	}
	host, port, _ := strings.Cut(cfg.Addr, ":")
	keys := historyKeys(cfg.PerRoute)
	raws := map[string]bool{}
	for _, k := range keys {
		raws[k.Key] = k.Raw
	}
	var seq sync.Mutex
	n := 0
	unique := func() string {
		seq.Lock()
		defer seq.Unlock()
		n++
		return cfg.Proc + "." + strconv.Itoa(n)
	}
	// stored is what SET stores for a value on k's route.
	stored := func(k, v string) string {
		if raws[k] {
			return v
		}
		return envelopeOf(v)
	}
	intOf := func(r rueidis.RedisResult) (*int64, error) {
		n, err := r.AsInt64()
		if err != nil {
			return nil, err
		}
		return &n, nil
	}
	// valueOf turns a GET-like reply into (present, payload).
	valueOf := func(k string, r rueidis.RedisResult) (bool, []byte, error) {
		s, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			return false, nil, nil
		}
		if err != nil {
			return false, nil, err
		}
		p, err := payloadOf(raws[k], s)
		return true, []byte(p), err
	}
	const getset = "local old = redis.call('GET', KEYS[1]); redis.call('SET', KEYS[1], ARGV[1]); return old"
	const evalSet = "return redis.call('SET', KEYS[1], ARGV[1])"
	const evalDel = "return redis.call('DEL', KEYS[1])"
	const evalAppend = "return redis.call('APPEND', KEYS[1], ARGV[1])"
	sameRoute := func(rnd *rand.Rand, k historyKey) historyKey {
		for {
			o := keys[rnd.IntN(len(keys))]
			if o.Raw == k.Raw && o.Key != k.Key {
				return o
			}
		}
	}
	do := func(ctx context.Context, w int, rnd *rand.Rand, hk historyKey) {
		k := hk.Key
		ctx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		defer cancel()
		p := rnd.IntN(100)
		if !hk.Raw && p >= 60 && p < 80 {
			p -= 40 // no APPEND/SETRANGE on enveloped values
		}
		switch {
		case p < 20:
			v := unique()
			id := hr.call(rec{C: w, K: "set", Key: k, V: []byte(v)})
			hr.ret(id, cl.Do(ctx, cl.B().Set().Key(k).Value(rueidis.BinaryString([]byte(stored(k, v)))).Build()).Error(), rec{})
		case p < 28:
			o := sameRoute(rnd, hk)
			v1, v2 := unique(), unique()
			id1 := hr.call(rec{C: w, K: "set", Key: k, V: []byte(v1)})
			id2 := hr.call(rec{C: w, K: "set", Key: o.Key, V: []byte(v2)})
			err := cl.Do(ctx, cl.B().Mset().KeyValue().KeyValue(k, stored(k, v1)).KeyValue(o.Key, stored(o.Key, v2)).Build()).Error()
			hr.ret(id1, err, rec{})
			hr.ret(id2, err, rec{})
		case p < 40:
			id := hr.call(rec{C: w, K: "del", Key: k})
			n, err := intOf(cl.Do(ctx, cl.B().Del().Key(k).Build()))
			hr.ret(id, err, rec{N: n})
		case p < 50:
			ms := 50 + rnd.Int64N(750)
			id := hr.call(rec{C: w, K: "pexpire", Key: k, Ms: ms})
			n, err := intOf(cl.Do(ctx, cl.B().Pexpire().Key(k).Milliseconds(ms).Build()))
			hr.ret(id, err, rec{N: n})
		case p < 60:
			v := unique()
			id := hr.call(rec{C: w, K: "getset", Key: k, V: []byte(v)})
			ok, old, err := valueOf(k, cl.Do(ctx, cl.B().Eval().Script(getset).Numkeys(1).Key(k).Arg(stored(k, v)).Build()))
			hr.ret(id, err, rec{P: ok, O: old})
		case p < 70:
			s := "+" + unique()
			id := hr.call(rec{C: w, K: "append", Key: k, V: []byte(s)})
			var n *int64
			var err error
			if rnd.IntN(2) == 0 {
				n, err = intOf(cl.Do(ctx, cl.B().Append().Key(k).Value(s).Build()))
			} else {
				n, err = intOf(cl.Do(ctx, cl.B().Eval().Script(evalAppend).Numkeys(1).Key(k).Arg(s).Build()))
			}
			hr.ret(id, err, rec{N: n})
		case p < 80:
			s := "@" + strconv.Itoa(rnd.IntN(100))
			off := rnd.IntN(8)
			id := hr.call(rec{C: w, K: "setrange", Key: k, V: []byte(s), Off: off})
			n, err := intOf(cl.Do(ctx, cl.B().Setrange().Key(k).Offset(int64(off)).Value(s).Build()))
			hr.ret(id, err, rec{N: n})
		case p < 88:
			if rnd.IntN(2) == 0 {
				v := unique()
				id := hr.call(rec{C: w, K: "set", Key: k, V: []byte(v)})
				hr.ret(id, cl.Do(ctx, cl.B().Eval().Script(evalSet).Numkeys(1).Key(k).Arg(stored(k, v)).Build()).Error(), rec{})
			} else {
				id := hr.call(rec{C: w, K: "del", Key: k})
				n, err := intOf(cl.Do(ctx, cl.B().Eval().Script(evalDel).Numkeys(1).Key(k).Build()))
				hr.ret(id, err, rec{N: n})
			}
		default:
			// redis-cli, one process per command: values on raw routes,
			// deletes and expiries anywhere (an envelope is binary).
			args := []string{"-h", host, "-p", port}
			var x rec
			switch q := rnd.IntN(3); {
			case q == 0 && hk.Raw:
				v := unique()
				x = rec{C: w, K: "set", Key: k, V: []byte(v)}
				args = append(args, "SET", k, v)
			case q == 1:
				ms := 50 + rnd.Int64N(750)
				x = rec{C: w, K: "pexpire", Key: k, Ms: ms}
				args = append(args, "PEXPIRE", k, strconv.FormatInt(ms, 10))
			default:
				x = rec{C: w, K: "del", Key: k}
				args = append(args, "DEL", k)
			}
			id := hr.call(x)
			out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
			reply := strings.TrimSpace(string(out))
			var r rec
			if err == nil && x.K != "set" {
				if v, perr := strconv.ParseInt(reply, 10, 64); perr == nil {
					r.N = &v
				} else {
					err = fmt.Errorf("redis-cli: %q", reply)
				}
			} else if err == nil && reply != "OK" {
				err = fmt.Errorf("redis-cli: %q", reply)
			}
			hr.ret(id, err, r)
		}
	}
	work := func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { react(ctx, cfg, cl, hr, raws, unique, stored) })
		workerLoop(ctx, cfg, func(ctx context.Context, w int, rnd *rand.Rand) {
			do(ctx, w+1, rnd, keys[rnd.IntN(len(keys))])
		})
		wg.Wait()
	}
	serve(rio, work, func() {})
	return nil
}

// react subscribes to SET events and, for half of those on keys of the
// check, deletes or overwrites the key at once (its own SETs trigger it
// again with the same odds, so chains stay short). It records as worker 0.
func react(ctx context.Context, cfg historyConfig, cl rueidis.Client, r *recorder, raws map[string]bool,
	unique func() string, stored func(k, v string) string) {
	events := make(chan string, 1024)
	go func() {
		for ctx.Err() == nil {
			// Receive returns when the connection drops (a restart, a
			// kill): subscribe again.
			_ = cl.Receive(ctx, cl.B().Subscribe().Channel(keyEventSet).Build(), func(m rueidis.PubSubMessage) {
				if _, ok := raws[m.Message]; ok {
					select {
					case events <- m.Message:
					default:
					}
				}
			})
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond): // before resubscribing to a server coming back
			}
		}
	}()
	rnd := rand.New(rand.NewPCG(cfg.Seed, 1<<32))
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-events:
			if rnd.IntN(2) != 0 {
				continue
			}
			octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
			if rnd.IntN(2) == 0 {
				id := r.call(rec{C: 0, K: "del", Key: k})
				n, err := cl.Do(octx, cl.B().Del().Key(k).Build()).AsInt64()
				r.ret(id, err, rec{N: &n})
			} else {
				v := unique()
				id := r.call(rec{C: 0, K: "set", Key: k, V: []byte(v)})
				r.ret(id, cl.Do(octx, cl.B().Set().Key(k).Value(rueidis.BinaryString([]byte(stored(k, v)))).Build()).Error(), rec{})
			}
			cancel()
		}
	}
}
