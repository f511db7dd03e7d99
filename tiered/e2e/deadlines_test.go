package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tiered/e2e/faultproxy"
)

// Deadlines of issue 12: every public call returns within its context's
// deadline plus a small slack, whatever Redis does.
const (
	// callDeadline is every measured call's context deadline.
	callDeadline = 50 * time.Millisecond
	// overrunBound is what TestDeadlines asserts on every call: how far
	// past its deadline it may return on a loaded 2-core machine with a
	// race-enabled binary and deadlineWorkers calls in flight. It is far
	// above the target (20 ms) because such a machine is that
	// late by itself: the control, a bare wait on a context beside the
	// calls, has woken up to 1.1 s late with a load average of 16. That
	// the library adds no wait of its own is checked on the stacks of late
	// calls instead (lateWait).
	overrunBound = 2 * time.Second
	// deadlineCalls is how many calls of each operation are made under
	// each fault, deadlineWorkers at a time.
	deadlineCalls   = 1000
	deadlineWorkers = 25
	// dumpAfter: a call still running this long after its deadline has
	// its goroutine's stack captured (at most maxDumps per operation and
	// fault: a dump stops the world) and judged by lateWait.
	dumpAfter = 30 * time.Millisecond
	maxDumps  = 6
	heldKeys  = 200 // per route, set before the fault
)

// deadlineFault is one way for Redis to go wrong. open returns the address
// the cache is opened on; inject breaks it once the cache is warm.
type deadlineFault struct {
	name string
	// silent: the cache is opened on an address that accepts and never
	// answers (faultproxy.ListenSilent), and Open itself is measured.
	silent bool
	inject func(t *testing.T, s *redistest.Server, p *faultproxy.Proxy)
}

// TestDeadlines makes deadlineCalls calls of every public operation, each
// with a callDeadline context, under each Redis fault, and records how far
// past its deadline each returned. It asserts every overrun is within
// overrunBound, and that no call caught late (still running dumpAfter past
// its deadline) was waiting on anything but its context or the CPU: a
// call blocked inside rueidis, or on a channel, condition or I/O of its
// own, fails the test with its stack. The table of p50/p99/max per fault
// and operation, beside the control's (a bare context wait at the same
// time: the machine's own lateness), is in the log.
//
// The cache has two routes, Memory|Redis ("m:") and Memory|Disk|Redis
// ("d:"), the default Unverified policy (Revalidate) and rueidis's default
// ConnWriteTimeout (1 s), so both phases of a silent fault are measured:
// before the cache notices (entries still verified) and after (entries
// unverified, each read asks Redis first).
//
// A slow disk is not among the faults: tiered.Options has no way to give
// the disk tier a filesystem (store.Options.FS exists, tiered does not pass
// one), and slowing a real device (dm-delay) needs the page cache dropped
// machine-wide for reads to reach it.
func TestDeadlines(t *testing.T) {
	faults := []deadlineFault{
		{name: "frozen", inject: func(t *testing.T, s *redistest.Server, _ *faultproxy.Proxy) {
			s.Pause()
			t.Cleanup(s.Resume)
		}},
		{name: "blackholed", inject: func(t *testing.T, _ *redistest.Server, p *faultproxy.Proxy) {
			addFault(t, p, faultproxy.Blackhole(faultproxy.Upstream))
			addFault(t, p, faultproxy.Blackhole(faultproxy.Downstream))
		}},
		{name: "silent at open", silent: true},
		{name: "latency 200ms", inject: func(t *testing.T, _ *redistest.Server, p *faultproxy.Proxy) {
			addFault(t, p, faultproxy.Latency(faultproxy.Downstream, 200*time.Millisecond, 0))
		}},
		{name: "bandwidth 1KB/s", inject: func(t *testing.T, _ *redistest.Server, p *faultproxy.Proxy) {
			addFault(t, p, faultproxy.Bandwidth(faultproxy.Downstream, 1))
			addFault(t, p, faultproxy.Bandwidth(faultproxy.Upstream, 1))
		}},
	}
	var table []deadlineRow
	for _, f := range faults {
		t.Run(strings.ReplaceAll(f.name, " ", "_"), func(t *testing.T) {
			table = append(table, runDeadlines(t, f)...)
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "overrun past a %v deadline (%d calls each, %d in flight):\n", callDeadline, deadlineCalls, deadlineWorkers)
	fmt.Fprintf(&b, "%-16s %-16s %6s %9s %9s %9s | %9s %9s | %s\n", "fault", "operation", "calls", "p50", "p99", "max", "ctl p99", "ctl max", "results; caught late: waiting on")
	for _, r := range table {
		fmt.Fprintf(&b, "%-16s %-16s %6d %9v %9v %9v | %9v %9v | %s\n", r.fault, r.op, r.n, r.p50, r.p99, r.max.Round(10*time.Microsecond), r.schedP99, r.schedMax, r.results+"; "+r.late)
	}
	t.Log(b.String())
}

func addFault(t *testing.T, p *faultproxy.Proxy, tx faultproxy.Toxic) {
	t.Helper()
	f, err := p.Add(faultproxy.DefaultLane, tx)
	if err != nil {
		t.Fatalf("add %v: %v", tx, err)
	}
	t.Cleanup(func() { _ = f.Remove() })
}

// deadlineRow is one fault × operation of the table.
type deadlineRow struct {
	fault, op     string
	n             int
	p50, p99, max time.Duration
	// schedP99 and schedMax are the control's: a bare context wait.
	schedP99, schedMax time.Duration
	results            string // outcome counts, by sentinel
	late               string // what the calls caught late were waiting on
}

// deadlineOp is one public operation, called with the i-th call's key.
type deadlineOp struct {
	name string
	call func(ctx context.Context, c *tiered.Cache, i int) error
}

func runDeadlines(t *testing.T, f deadlineFault) []deadlineRow {
	s := redistest.Start(t, nil)
	p := faultproxy.Start(t, s.Addr(), nil)
	addr := p.Addr()
	var rows []deadlineRow
	if f.silent {
		sl := faultproxy.ListenSilent(t)
		addr = sl.Addr()
		rows = append(rows, measureOpen(t, f.name, addr))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := tiered.Open(ctx, &tiered.Options{
		Routes: []tiered.Route{
			{Prefix: "m:", Tiers: tiered.Memory | tiered.Redis, TTL: time.Hour, MaxStale: time.Hour},
			{Prefix: "d:", Tiers: tiered.Memory | tiered.Disk | tiered.Redis, TTL: time.Hour, MaxStale: time.Hour},
		},
		Redis:  &rueidis.ClientOption{InitAddress: []string{addr}},
		Dir:    t.TempDir(),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("open on %s: %v", addr, err)
	}
	t.Logf("%s: Open took %v", f.name, time.Since(start).Round(time.Millisecond))
	defer func() {
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Logf("%s: Close: %v", f.name, err)
		}
		t.Logf("%s: Close took %v", f.name, time.Since(start).Round(time.Millisecond))
	}()

	held := func(i int) string { return []string{"m:", "d:"}[i%2] + "held:" + strconv.Itoa(i/2%heldKeys) }
	load := tiered.LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("loaded"), nil })
	for i := range 2 * heldKeys {
		if f.silent {
			// Nothing reaches Redis: a load, degraded to this process,
			// keeps its value locally.
			if _, _, err := c.GetOrLoad(ctx, held(i), load); err != nil {
				t.Fatalf("load %s: %v", held(i), err)
			}
			continue
		}
		if err := c.Set(ctx, held(i), []byte("held"), 0); err != nil {
			t.Fatalf("set %s: %v", held(i), err)
		}
	}
	if !f.silent {
		if err := c.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		f.inject(t, s, p)
	}
	uniq := func(kind string, i int) string { return []string{"m:", "d:"}[i%2] + kind + ":" + strconv.Itoa(i) }
	ops := []deadlineOp{
		{"Get held", func(ctx context.Context, c *tiered.Cache, i int) error {
			_, _, err := c.Get(ctx, held(i))
			return err
		}},
		{"GetOrLoad held", func(ctx context.Context, c *tiered.Cache, i int) error {
			_, _, err := c.GetOrLoad(ctx, held(i), load)
			return err
		}},
		{"GetMany", func(ctx context.Context, c *tiered.Cache, i int) error {
			keys := []string{held(i), held(i + 1), uniq("many", 4*i), uniq("many", 4*i+1), uniq("many", 4*i+2), uniq("many", 4*i+3)}
			var errs []error
			for _, r := range c.GetMany(ctx, keys) {
				errs = append(errs, r.Err)
			}
			return errors.Join(errs...)
		}},
		{"Get not held", func(ctx context.Context, c *tiered.Cache, i int) error {
			_, _, err := c.Get(ctx, uniq("get", i))
			return err
		}},
		{"GetOrLoad cold", func(ctx context.Context, c *tiered.Cache, i int) error {
			_, _, err := c.GetOrLoad(ctx, uniq("cold", i), load)
			return err
		}},
		{"Set", func(ctx context.Context, c *tiered.Cache, i int) error {
			return c.Set(ctx, uniq("set", i), []byte("v"), 0)
		}},
		{"Delete", func(ctx context.Context, c *tiered.Cache, i int) error {
			return c.Delete(ctx, uniq("del", i))
		}},
		{"InvalidatePrefix", func(ctx context.Context, c *tiered.Cache, i int) error {
			_, err := c.InvalidatePrefix(ctx, uniq("inv", i)+":")
			return err
		}},
		{"Flush", func(ctx context.Context, c *tiered.Cache, _ int) error {
			return c.Flush(ctx)
		}},
	}
	for _, op := range ops {
		rows = append(rows, measureOp(t, f.name, op, c))
	}
	return rows
}

// measureOpen opens caches on a silent address with a callDeadline
// context: Open must give up by the deadline like any call.
func measureOpen(t *testing.T, fault, addr string) deadlineRow {
	const opens = 100 // each starts a client: fewer than the operations
	op := deadlineOp{name: "Open", call: func(ctx context.Context, _ *tiered.Cache, _ int) error {
		c, err := tiered.Open(ctx, &tiered.Options{
			Routes: []tiered.Route{{Prefix: "m:", Tiers: tiered.Memory | tiered.Redis}},
			Redis:  &rueidis.ClientOption{InitAddress: []string{addr}},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err == nil {
			// Closed off the clock: only Open's time is measured.
			go c.Close()
		}
		return err
	}}
	return measure(t, fault, op, nil, opens, 10)
}

func measureOp(t *testing.T, fault string, op deadlineOp, c *tiered.Cache) deadlineRow {
	return measure(t, fault, op, c, deadlineCalls, deadlineWorkers)
}

// measure makes n calls of op, workers at a time, each with a
// callDeadline context, and checks and tabulates their overruns.
func measure(t *testing.T, fault string, op deadlineOp, c *tiered.Cache, n, workers int) deadlineRow {
	t.Helper()
	var (
		mu       sync.Mutex
		overruns []time.Duration
		results  = map[string]int{}
		late     []string // stacks of calls caught late
		dumps    int
	)
	var next atomic.Int64
	var wg sync.WaitGroup
	// The control: a bare wait on a context with the same deadline, beside
	// the calls. How late it wakes is the machine's scheduling, not the
	// library's.
	var sched []time.Duration
	ctlDone := make(chan struct{})
	ctlStop := make(chan struct{})
	go func() {
		defer close(ctlDone)
		for {
			select {
			case <-ctlStop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
			dl, _ := ctx.Deadline()
			<-ctx.Done()
			sched = append(sched, max(time.Since(dl), 0))
			cancel()
		}
	}()
	for range workers {
		wg.Go(func() {
			gid := goroutineID()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
				dl, _ := ctx.Deadline()
				var done atomic.Bool
				watch := time.AfterFunc(callDeadline+dumpAfter, func() {
					// The dump is taken outside mu: it stops the world,
					// and the other workers record under mu.
					mu.Lock()
					take := !done.Load() && dumps < maxDumps
					if take {
						dumps++
					}
					mu.Unlock()
					if !take {
						return
					}
					st := goroutineStack(gid)
					mu.Lock()
					late = append(late, st)
					mu.Unlock()
				})
				err := op.call(ctx, c, i)
				over := time.Since(dl)
				done.Store(true)
				watch.Stop()
				cancel()
				mu.Lock()
				overruns = append(overruns, max(over, 0))
				results[outcome(err)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(ctlStop)
	<-ctlDone
	slices.Sort(overruns)
	slices.Sort(sched)
	row := deadlineRow{fault: fault, op: op.name, n: len(overruns),
		p50: pct(overruns, 50), p99: pct(overruns, 99), max: overruns[len(overruns)-1],
		schedP99: pct(sched, 99), schedMax: pct(sched, 100)}
	var rs []string
	for _, k := range slices.Sorted(maps.Keys(results)) {
		rs = append(rs, fmt.Sprintf("%s=%d", k, results[k]))
	}
	row.results = strings.Join(rs, " ")
	if row.max > overrunBound {
		t.Errorf("%s: %s: overrun p99 %v, max %v; want max <= %v (results %s)",
			fault, op.name, row.p99, row.max, overrunBound, row.results)
	}
	mu.Lock()
	defer mu.Unlock()
	waits := map[string]int{}
	for _, st := range late {
		w, ok := lateWait(st)
		waits[w]++
		if !ok {
			t.Errorf("%s: %s: a call %v past its deadline was blocked in the library (%s):\n%s", fault, op.name, dumpAfter, w, st)
		}
	}
	var ws []string
	for _, k := range slices.Sorted(maps.Keys(waits)) {
		ws = append(ws, fmt.Sprintf("%s=%d", k, waits[k]))
	}
	row.late = strings.Join(ws, " ")
	return row
}

// pct is the p-th percentile of sorted d.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)].Round(10 * time.Microsecond)
}

// outcome names err by the first sentinel it matches.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range []struct {
		err  error
		name string
	}{
		{tiered.ErrUnavailable, "unavailable"}, {tiered.ErrRefused, "refused"}, {tiered.ErrLoad, "load"},
		{tiered.ErrClosed, "closed"}, {tiered.ErrLoaderPanic, "panic"}, {tiered.ErrDecode, "decode"},
		{tiered.ErrConfig, "config"},
		{context.DeadlineExceeded, "deadline"}, {context.Canceled, "canceled"},
	} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "other(" + firstLine(err.Error()) + ")"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// goroutineID is the calling goroutine's id, as stack dumps print it.
func goroutineID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseInt(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// goroutineStack returns goroutine id's stack as of now, from a dump of
// every goroutine.
func goroutineStack(id int64) string {
	buf := make([]byte, 16<<20)
	all := string(buf[:runtime.Stack(buf, true)])
	head := "goroutine " + strconv.FormatInt(id, 10) + " ["
	for _, g := range strings.Split(all, "\n\n") {
		if strings.HasPrefix(g, head) {
			return g
		}
	}
	return "(goroutine " + strconv.FormatInt(id, 10) + " not found)"
}

// ctxWaits are the library's waits on a caller's context (a select on
// ctx.Done() among others): a call caught there past its deadline is
// waiting for the scheduler to run the timer or itself. rueidis's pipe
// waits for a reply in a select on the call's ctx too (pipe.Do,
// pipe.DoMulti): the bounded client sends a call from its caller's
// goroutine while the connection is healthy (tracking's direct), so a call
// can be caught there; rueidis's waits that ignore ctx (the ring's
// condition variable, the redial's wait group) are still caught.
var ctxWaits = []string{
	"tracking.bounded.start", "tracking.newClient", "herd.(*Group).Do",
	"tiered.(*writeBehind).wait", "tiered.(*writeBehind).sync", "tiered.(*ownWrites).wait",
	"rueidis.(*pipe).Do", "rueidis.(*pipe).DoMulti",
}

// lateWait says what the goroutine in stack st (one goroutine of a dump)
// was waiting on, and whether that is allowed for a call past its
// deadline: running or runnable, the garbage collector, a runtime
// semaphore (allocation, GC), a lock (contention: named, allowed), or a
// select in one of ctxWaits. Anything else — a condition variable, a wait
// group, a channel, I/O, a select elsewhere, any wait inside rueidis — is
// the library holding the call past its deadline.
func lateWait(st string) (string, bool) {
	head, body, _ := strings.Cut(st, "\n")
	i, j := strings.Index(head, "["), strings.LastIndex(head, "]")
	if i < 0 || j < i {
		return head, true // gone by the time of the dump: it returned
	}
	state := head[i+1 : j]
	state, _, _ = strings.Cut(state, ",")
	// The first frame outside the runtime and the standard library's
	// sync packages: where the call is.
	var frame string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "\t") || l == "" {
			continue
		}
		if !strings.HasPrefix(l, "runtime.") && !strings.HasPrefix(l, "internal/") && !strings.HasPrefix(l, "sync.") {
			frame = l
			if i := strings.LastIndex(l, "("); i > 0 {
				frame = l[:i] // the arguments
			}
			break
		}
	}
	short := strings.TrimPrefix(frame, "github.com/thermoscache/thermos/")
	switch state {
	case "running", "runnable", "GC assist wait", "GC worker (idle)", "semacquire", "preempted":
		if strings.HasPrefix(frame, "github.com/redis/rueidis.") && state == "semacquire" {
			return state + " in " + short, false
		}
		return state, true
	case "sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock":
		return "lock in " + short, !strings.HasPrefix(frame, "github.com/redis/rueidis.")
	case "select":
		for _, w := range ctxWaits {
			if strings.HasSuffix(frame, w) {
				return "ctx in " + short, true
			}
		}
	}
	return state + " in " + short, false
}
