package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestHistory records the operations of several thermos processes and of
// writers that are not thermos while the harness injects faults, checks the
// histories against the register model (model_test.go), and checks that,
// once the writers stop and δ passes, every cache agrees with Redis on
// every key.
//
// The reduced run (go test) lasts about 75 s with 2 thermos processes and
// a plain writer; -history.long (or THERMOS_E2E_LONG=1) runs 10 minutes with
// 3 thermos processes, a fault every 20 s.
func TestHistory(t *testing.T) {
	p := historyParams{
		role: "thermos", thermos: 2, workers: 3, pace: 8 * time.Millisecond, plainWorkers: 1, plainPace: 40 * time.Millisecond,
		perRoute: 60, run: 75 * time.Second, faultEvery: 12 * time.Second,
	}
	if *flagLong || os.Getenv("THERMOS_E2E_LONG") == "1" {
		p.thermos, p.run, p.faultEvery = 3, 10*time.Minute, 20*time.Second
	} else if testing.Short() {
		t.Skip("the history check runs for more than a minute: skipped in -short mode")
	}
	if *flagRun > 0 {
		p.run, p.faultEvery = *flagRun, *flagRun/6
	}
	runHistory(t, p)
}

// TestHistoryControl runs the same harness with processes that read and
// write Redis directly (GET, SET, SET NX, DEL), checked strictly (no δ):
// Redis is linearizable, so the checker must find nothing under any of the
// faults. A violation here is the checker's or the harness's bug.
func TestHistoryControl(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	runHistory(t, historyParams{
		role: "direct", thermos: 2, workers: 3, pace: 8 * time.Millisecond, plainWorkers: 1, plainPace: 40 * time.Millisecond,
		perRoute: 60, run: 30 * time.Second, faultEvery: 5 * time.Second,
	})
}

// historyParams size a run.
//
// Few writes per key and many reads: a stale value is only seen as a
// violation if no other write to its key comes within δ, so the write rate
// per key is kept well under 1/δ (about 0.3/s) while every key is read a
// few times a second.
type historyParams struct {
	role         string        // of the reading processes: "thermos", or "direct" for the control run
	thermos      int           // thermos processes (plus one plain writer)
	workers      int           // goroutines per thermos process
	pace         time.Duration // mean pause between a thermos worker's operations
	plainWorkers int           // goroutines of the plain writer (besides its reactor)
	plainPace    time.Duration
	perRoute     int // keys per route
	run          time.Duration
	faultEvery   time.Duration
}

// Fault sizes. maxPause bounds how long a command can sit in a frozen
// server's socket; opTimeout is every client's per-operation timeout.
const (
	opTimeout = 2 * time.Second
	maxPause  = 2 * time.Second
)

// faultKinds are injected in this order, round and round.
var faultKinds = []string{"client-kill", "pause", "restart-persist", "kill-thermos", "restart-empty"}

type historyRun struct {
	t       *testing.T
	p       historyParams
	srv     *redistest.Server
	plain   rueidis.Client
	dir     string
	thermos []*procSlot
	ext     *procSlot
	files   []procFile // every history file, with its process name
	harness []hop      // the harness's own operations (flushes)
	faults  map[string]int
	spans   []faultSpan
	rnd     *rand.Rand
}

// procSlot is one thermos (or plain) process and its directory; a killed
// process is replaced by a new one in the same slot.
type procSlot struct {
	name    string
	dir     string
	role    string
	c       *child
	restart int
}

type procFile struct{ path, proc string }

func runHistory(t *testing.T, p historyParams) {
	s := redistest.Start(t, &redistest.Options{Persist: true, Args: []string{"--notify-keyspace-events", notifyAllArgs}})
	delta := stalenessBound(t, s.Addr(), testConnWriteTimeout)
	h := &historyRun{t: t, p: p, srv: s, dir: t.TempDir(), faults: map[string]int{}, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	h.plain = plainClient(t, []string{s.Addr()})
	t.Logf("history: δ = %v (ConnWriteTimeout %v, slack %v); %d %s processes × %d workers + 1 plain writer × %d workers and a reactor; %d keys; run %v, a fault every %v",
		delta, testConnWriteTimeout, schedulingSlack, p.thermos, p.role, p.workers, p.plainWorkers, p.perRoute*len(historyRoutes), p.run, p.faultEvery)

	for i := range p.thermos {
		sl := &procSlot{name: "T" + strconv.Itoa(i), dir: filepath.Join(h.dir, "T"+strconv.Itoa(i)), role: p.role}
		h.thermos = append(h.thermos, sl)
		h.start(sl)
	}
	h.ext = &procSlot{name: "ext", role: "plain"}
	h.start(h.ext)

	// Faults while the processes work.
	end := time.Now().Add(p.run)
	next := time.Now().Add(p.faultEvery)
	for i := 0; ; i++ {
		if next.After(end) {
			time.Sleep(time.Until(end)) // the run's length, not a condition
			break
		}
		time.Sleep(time.Until(next)) // faults come on a schedule
		h.fault(faultKinds[i%len(faultKinds)])
		next = next.Add(p.faultEvery)
	}

	// Stop the writers, let δ pass (and every PEXPIRE the plain writer
	// set, at most 800 ms), then compare every cache with Redis.
	all := append(slices.Clone(h.thermos), h.ext)
	for _, sl := range all {
		sl.c.send("stop")
	}
	for _, sl := range all {
		sl.c.expect("stopped", 30*time.Second)
	}
	time.Sleep(delta + time.Second) // δ is the bound under test
	mismatches := h.converge()

	for _, sl := range all {
		sl.c.quit(30 * time.Second)
	}

	var hist []hop
	for _, f := range h.files {
		ops, err := loadHistory(f.path, f.proc)
		if err != nil {
			t.Fatalf("history of %s: %v", f.proc, err)
		}
		hist = append(hist, ops...)
	}
	hist = append(hist, h.harness...)
	viz := vizDirOr(t.TempDir())
	start := time.Now()
	res := check(hist, checkOptions{delta: delta, ambiguous: opTimeout + maxPause + 1500*time.Millisecond, timeout: 2 * time.Minute, vizDir: viz, faults: h.spans})
	t.Logf("history: checked in %v", time.Since(start).Round(time.Millisecond))
	res.report(t.Logf)
	var fk []string
	for _, k := range faultKinds {
		fk = append(fk, fmt.Sprintf("%s=%d", k, h.faults[k]))
	}
	t.Logf("history: faults injected: %s", strings.Join(fk, " "))
	t.Logf("history: convergence: %d (process, key) pairs where a cache differs from Redis", len(mismatches))
	for _, m := range mismatches {
		t.Logf("  %s", m)
	}
	if res.ops == 0 {
		t.Fatalf("no operations recorded")
	}
	if len(res.violations) != 0 || len(res.unknown) != 0 || len(mismatches) != 0 {
		t.Errorf("%d keys with linearizability violations, %d undecided, %d convergence mismatches; want 0, 0, 0",
			len(res.violations), len(res.unknown), len(mismatches))
	}
}

// start launches sl's process (again, after a kill: same directory, a new
// history file and process name).
func (h *historyRun) start(sl *procSlot) {
	workers, pace := h.p.workers, h.p.pace
	if sl.role == "plain" {
		workers, pace = h.p.plainWorkers, h.p.plainPace
	}
	proc := sl.name
	if sl.restart > 0 {
		proc = fmt.Sprintf("%s.r%d", sl.name, sl.restart)
	}
	path := filepath.Join(h.dir, proc+".history")
	h.files = append(h.files, procFile{path, proc})
	sl.c = startChild(h.t, proc, sl.role, historyConfig{
		Addr: h.srv.Addr(), Dir: sl.dir, History: path, Proc: proc, Seed: h.rnd.Uint64(),
		Workers: workers, PerRoute: h.p.perRoute, Pace: pace, OpTimeout: opTimeout, ConnWrite: testConnWriteTimeout,
	})
}

// fault injects one fault and waits until the system is back.
func (h *historyRun) fault(kind string) {
	t := h.t
	t.Logf("history: fault %s at %s", kind, time.Now().Format("15:04:05.000"))
	start := now()
	defer func() { h.spans = append(h.spans, faultSpan{kind: kind, start: start, end: now()}) }()
	switch kind {
	case "client-kill":
		ids := h.trackingClients()
		if h.p.role != "thermos" {
			ids = h.otherClients()
		}
		if len(ids) == 0 {
			t.Logf("history: no tracking connection to kill")
			return
		}
		id := ids[h.rnd.IntN(len(ids))]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := h.plain.Do(ctx, h.plain.B().ClientKill().Id(id).Build()).Error()
		cancel()
		if err != nil {
			t.Fatalf("CLIENT KILL ID %d: %v", id, err)
		}
	case "pause":
		h.srv.Pause()
		time.Sleep(maxPause) // the length of the freeze is the fault
		h.srv.Resume()
	case "restart-persist":
		h.srv.Kill()
		h.srv.Restart()
	case "restart-empty":
		// Without persistence every key is gone: the model gets a write
		// of "absent" on every key over the restart's interval.
		t0 := now()
		h.srv.Kill()
		if err := os.RemoveAll(filepath.Join(h.srv.Dir(), "appendonlydir")); err != nil {
			t.Fatalf("remove the append-only file: %v", err)
		}
		h.srv.Restart()
		t1 := now()
		for _, k := range historyKeys(h.p.perRoute) {
			h.harness = append(h.harness, hop{proc: "harness", key: k.Key, in: input{kind: kindFlush}, call: t0, ret: t1})
		}
	case "kill-thermos":
		sl := h.thermos[h.rnd.IntN(len(h.thermos))]
		sl.c.kill()
		sl.restart++
		h.start(sl) // warm restart on the same directory
	}
	h.faults[kind]++
	// Back to work before the next fault: every tracking connection up.
	deadline := time.Now().Add(30 * time.Second)
	for h.p.role == "thermos" && len(h.trackingClients()) < len(h.thermos) || len(h.otherClients()) == 0 {
		if time.Now().After(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			list, err := h.plain.Do(ctx, h.plain.B().ClientList().Build()).ToString()
			cancel()
			t.Fatalf("after %s, not every thermos process tracks again within 30s; CLIENT LIST (%v):\n%s", kind, err, list)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis
	}
}

// trackingClients returns the ids of the connections with client tracking
// on (flag t in CLIENT LIST): one per thermos process.
func (h *historyRun) trackingClients() []int64 {
	return h.clients(func(flags string) bool { return strings.Contains(flags, "t") })
}

// otherClients returns the ids of every connection but the harness's own
// and subscribers: the victims of client-kill in the control run. It is
// empty while Redis does not answer.
func (h *historyRun) otherClients() []int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	own, err := h.plain.Do(ctx, h.plain.B().ClientId().Build()).AsInt64()
	if err != nil {
		return nil
	}
	ids := h.clients(func(flags string) bool { return !strings.Contains(flags, "P") })
	return slices.DeleteFunc(ids, func(id int64) bool { return id == own })
}

// clients returns the ids of the connections in CLIENT LIST whose flags
// match.
func (h *historyRun) clients(match func(flags string) bool) []int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := h.plain.Do(ctx, h.plain.B().ClientList().Build()).ToString()
	if err != nil {
		return nil
	}
	s = strings.TrimPrefix(s, "txt:") // RESP3 verbatim string
	var ids []int64
	for _, line := range strings.Split(s, "\n") {
		var id int64 = -1
		ok := false
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id, _ = strconv.ParseInt(v, 10, 64)
			case "flags":
				ok = match(v)
			}
		}
		if ok && id >= 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// converge reads every key through every thermos process and with a plain
// GET, and returns where they differ. Redis is read before and after: a key
// that changed meanwhile (an expiry) is not judged.
func (h *historyRun) converge() []string {
	keys := historyKeys(h.p.perRoute)
	before, after := h.redisView(keys), map[string]string{}
	var out []string
	for _, sl := range h.thermos {
		sl.c.send("check")
		for range keys {
			var r checkReply
			l := sl.c.next(30 * time.Second)
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				h.t.Fatalf("%s check: %q: %v", sl.name, l, err)
			}
			want, ok := before[r.Key]
			got := "absent"
			if r.Err != "" {
				got = "error: " + r.Err
			} else if r.Present {
				got = strconv.Quote(string(r.Val))
			}
			if !ok {
				want = "absent"
			}
			if got != want {
				out = append(out, fmt.Sprintf("%s %s: cache %s, redis %s", sl.name, r.Key, got, want))
			}
		}
		sl.c.expect("checked", 30*time.Second)
	}
	after = h.redisView(keys)
	out = slices.DeleteFunc(out, func(m string) bool {
		k := strings.Fields(m)[1]
		k = strings.TrimSuffix(k, ":")
		return before[k] != after[k]
	})
	return out
}

// redisView is what Redis holds for keys, as tiered would serve it
// (quoted payload); absent keys are missing from the map. The GETs join the
// harness's history as plain reads.
func (h *historyRun) redisView(keys []historyKey) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := map[string]string{}
	for _, k := range keys {
		t0 := now()
		s, err := h.plain.Do(ctx, h.plain.B().Get().Key(k.Key).Build()).ToString()
		t1 := now()
		if rueidis.IsRedisNil(err) {
			// Plain reads in the history too: they pin Redis's final
			// state, so a cache stuck on an older value is the one blamed.
			h.harness = append(h.harness, hop{proc: "harness", key: k.Key, in: input{kind: kindRead}, call: t0, ret: t1})
			continue
		}
		if err != nil {
			h.t.Fatalf("GET %s: %v", k.Key, err)
		}
		p, err := payloadOf(k.Raw, s)
		if err != nil {
			h.t.Fatalf("GET %s: %v", k.Key, err)
		}
		m[k.Key] = strconv.Quote(p)
		h.harness = append(h.harness, hop{proc: "harness", key: k.Key, in: input{kind: kindRead}, out: output{present: true, val: p}, call: t0, ret: t1})
	}
	return m
}
