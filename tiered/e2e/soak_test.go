package e2e

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tiered/e2e/faultproxy"
)

var flagSoakLong = flag.Bool("soak.long", false, "run the long soak (>= 3 min, a fault every 20 s, both Unverified policies); also THERMOS_E2E_SOAK=1")

// Soak sizes.
const (
	soakKeys     = 100_000
	soakWin      = 10 * time.Second
	soakDeadline = 100 * time.Millisecond
	// soakSlack is the target: every call returns within its
	// deadline plus this. soakBound is what is asserted: overrunBound,
	// the loaded machine's figure from TestDeadlines.
	soakSlack   = 20 * time.Millisecond
	soakBound   = overrunBound
	soakMemory  = 32 << 20
	soakWorkers = 4
	soakPace    = 2 * time.Millisecond
	// Growth allowed between a process's sample before its workers start
	// and its sample after they stopped (and the shared loads they left
	// have ended): goroutines and fds not at all beyond a few; the live
	// heap by the memory tier's budget, which the run fills, plus Pebble's
	// memtables and rueidis's buffers.
	soakGoroutineGrowth = 8
	soakFdGrowth        = 16
	soakHeapGrowth      = soakMemory + 48<<20
)

// soakFault is a fault of the rotation; it returns when the fault is over.
type soakFault struct {
	name   string
	inject func(h *soakRun)
}

var soakFaults = map[string]soakFault{
	"client-kill": {"client-kill", func(h *soakRun) {
		// Every client but the harness's own connection: each process's
		// pipe, and the herd's dedicated connections.
		for _, typ := range []string{"normal", "pubsub"} {
			if _, err := h.srv.Do("CLIENT", "KILL", "TYPE", typ); err != nil {
				h.t.Errorf("CLIENT KILL TYPE %s: %v", typ, err)
			}
		}
	}},
	"pause": {"pause 1s", func(h *soakRun) {
		h.srv.Pause()
		time.Sleep(time.Second) // the length of the freeze is the fault
		h.srv.Resume()
	}},
	"restart": {"restart", func(h *soakRun) {
		h.srv.Kill()
		h.srv.Restart() // with its append-only file: no data lost
	}},
	"blackhole": {"blackhole 2s", func(h *soakRun) {
		var fs []*faultproxy.Fault
		for _, d := range []faultproxy.Direction{faultproxy.Upstream, faultproxy.Downstream} {
			f, err := h.proxy.Add(faultproxy.DefaultLane, faultproxy.Blackhole(d))
			if err != nil {
				h.t.Fatalf("blackhole: %v", err)
			}
			fs = append(fs, f)
		}
		time.Sleep(2 * time.Second) // the length of the partition is the fault
		for _, f := range fs {
			if err := f.Remove(); err != nil {
				h.t.Errorf("remove blackhole: %v", err)
			}
		}
	}},
	"disk-full": {"disk full 5s", func(h *soakRun) {
		if h.tmpfs == "" {
			h.t.Logf("soak: disk-full not injected: %s", h.noTmpfs)
			return
		}
		ballast := filepath.Join(h.tmpfs, "ballast")
		n, err := fillDisk(ballast)
		if err != nil {
			h.t.Errorf("disk-full: %v", err)
		}
		h.t.Logf("soak: disk full (%d MiB of ballast)", n>>20)
		time.Sleep(5 * time.Second) // the length of the fault
		if err := os.Remove(ballast); err != nil {
			h.t.Errorf("disk-full: remove the ballast: %v", err)
		}
	}},
}

// TestSoak runs two thermos processes against one Redis under a fault every
// 20 s, and checks the targets: no error on a read of a key a
// process holds locally, no call past its deadline by more than soakBound
// (in a window where a bare context wait, the control, was not itself
// later than that: the machine stalling is not the library's),
// throughput in every 10 s window, and goroutines, file descriptors and live
// heap back near where they started once the workers stop. The table (per
// 10 s and process: throughput, p99, errors by sentinel, late calls,
// goroutines, heap, fds) ends the log.
//
// The reduced run (go test) lasts 50 s with two faults, SIGSTOP 1 s and a
// blackhole 2 s (the faults that test deadlines; TestHistory covers the
// others in CI). -soak.long (or THERMOS_E2E_SOAK=1) runs 3 min 20 s with
// the whole rotation — CLIENT KILL of every client, SIGSTOP 1 s, a restart
// with persistence, a blackhole 2 s, the disk full 5 s — once with
// Unverified: ServeStale and once with Revalidate.
//
// The held-key target is asserted under ServeStale, in the reduced run and
// the long one, and logged under Revalidate.
//
// The disk-full fault needs a tmpfs to fill, so mount rights
// (CAP_SYS_ADMIN); without them it is logged as not injected.
func TestSoak(t *testing.T) {
	long := *flagSoakLong || os.Getenv("THERMOS_E2E_SOAK") == "1"
	if !long && testing.Short() {
		t.Skip("the soak runs for about a minute: skipped in -short mode")
	}
	p := soakParams{run: 50 * time.Second, every: 15 * time.Second, faults: []string{"pause", "blackhole"}, strict: true}
	if long {
		p = soakParams{run: 200 * time.Second, every: 20 * time.Second,
			faults: []string{"client-kill", "pause", "restart", "blackhole", "disk-full"}, strict: true}
	}
	t.Run("ServeStale", func(t *testing.T) { runSoakTest(t, p) })
	if long {
		// Revalidate does not serve an unverified copy Redis cannot
		// vouch for: the held-key target is ServeStale's.
		p.revalidate, p.strict = true, false
		t.Run("Revalidate", func(t *testing.T) { runSoakTest(t, p) })
	}
}

type soakParams struct {
	run, every time.Duration
	faults     []string
	revalidate bool
	// strict asserts the held-key target (ServeStale), else it is logged.
	strict bool
}

type soakRun struct {
	t       *testing.T
	srv     *redistest.Server
	proxy   *faultproxy.Proxy
	tmpfs   string // mount point of the disk tiers' tmpfs; "" without
	noTmpfs string // why not
}

// soakProc is one child and what it reported.
type soakProc struct {
	c     *child
	base  soakWindow
	final soakWindow
	wins  []soakWindow
	mu    sync.Mutex
	done  chan struct{}
	ready chan struct{}
}

func runSoakTest(t *testing.T, p soakParams) {
	s := redistest.Start(t, &redistest.Options{Persist: true})
	h := &soakRun{t: t, srv: s, proxy: faultproxy.Start(t, s.Addr(), nil)}
	dir := t.TempDir()
	h.tmpfs, h.noTmpfs = mountTmpfs(t, filepath.Join(dir, "disk"), 512<<20)
	base := dir
	if h.tmpfs != "" {
		base = h.tmpfs
	}
	policy := "ServeStale"
	if p.revalidate {
		policy = "Revalidate"
	}
	t.Logf("soak: 2 processes × %d workers, %d zipfian keys (s=1.1), 90/10 GetOrLoad/Set, Memory|Disk|Redis, Unverified %s; run %v, faults %v every %v; deadline %v, slack %v (asserted bound %v)",
		soakWorkers, soakKeys, policy, p.run, p.faults, p.every, soakDeadline, soakSlack, soakBound)

	var procs []*soakProc
	for i := range 2 {
		cfg := soakConfig{Addr: h.proxy.Addr(), Dir: filepath.Join(base, "p"+strconv.Itoa(i)), Proc: i, Procs: 2, Keys: soakKeys,
			Workers: soakWorkers, Pace: soakPace, Deadline: soakDeadline, Slack: soakSlack, Bound: soakBound, Window: soakWin,
			Revalidate: p.revalidate, MemoryBytes: soakMemory, Seed: time.Now().UnixNano() + int64(i)*1000}
		pr := &soakProc{done: make(chan struct{}), ready: make(chan struct{})}
		pr.c = startChild(t, "soak"+strconv.Itoa(i), "soak", cfg)
		procs = append(procs, pr)
		go pr.read(t)
	}
	for _, pr := range procs {
		select {
		case <-pr.ready:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s sent no baseline%s", pr.c.name, pr.c.tail())
		}
	}
	for _, pr := range procs {
		pr.c.send("go")
	}
	start := time.Now()
	type span struct {
		name       string
		start, end time.Duration
	}
	var spans []span
	for i := 0; ; i++ {
		at := p.every * time.Duration(i+1)
		if at+p.every/2 > p.run {
			break
		}
		time.Sleep(time.Until(start.Add(at))) // faults come on a schedule
		f := soakFaults[p.faults[i%len(p.faults)]]
		t0 := time.Since(start)
		t.Logf("soak: %s at %v", f.name, t0.Round(time.Millisecond))
		f.inject(h)
		spans = append(spans, span{f.name, t0, time.Since(start)})
	}
	time.Sleep(time.Until(start.Add(p.run))) // the run's length
	for _, pr := range procs {
		pr.c.send("stop")
	}
	for _, pr := range procs {
		select {
		case <-pr.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not stop%s", pr.c.name, pr.c.tail())
		}
	}
	for _, pr := range procs {
		pr.c.send("quit")
	}

	// The table, and the checks.
	faultIn := func(w soakWindow) string {
		var names []string
		for _, sp := range spans {
			if sp.start < w.End && sp.end > w.End-soakWin {
				names = append(names, sp.name)
			}
		}
		return strings.Join(names, ",")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "soak, per %v window and process (rates per second; ctl late: how late a bare context wait woke at most, the machine's own lateness; late: calls past deadline+%v, very late: past deadline+%v):\n", soakWin, soakSlack, soakBound)
	fmt.Fprintf(&b, "%4s %4s %-13s %7s %6s %9s %9s %9s %5s %5s %7s %6s %6s %6s %5s %8s %4s  %s\n",
		"t", "proc", "fault", "reads/s", "sets/s", "p99", "max", "ctl late", "late", "vlate", "loads", "degr", "stale", "diskE", "gor", "heapMiB", "fds", "errors")
	var heldErrs, veryLate, stalled, late, reads int64
	errTotals := map[string]int64{}
	lateTotals := map[string]int64{}
	for w := 0; ; w++ {
		any := false
		for _, pr := range procs {
			if w >= len(pr.wins) {
				continue
			}
			any = true
			x := pr.wins[w]
			prev := pr.base
			if w > 0 {
				prev = pr.wins[w-1]
			}
			sec := soakWin.Seconds()
			fmt.Fprintf(&b, "%4.0f %4d %-13s %7.0f %6.0f %9v %9v %9v %5d %5d %7d %6d %6d %6d %5d %8.1f %4d  %s\n",
				x.End.Seconds(), x.Proc, faultIn(x), float64(x.Reads)/sec, float64(x.Sets)/sec, x.P99.Round(10*time.Microsecond), x.Max.Round(10*time.Microsecond),
				x.CtlMax.Round(10*time.Microsecond),
				x.Late, x.VeryLate, x.Loads-prev.Loads, x.Degraded-prev.Degraded, x.Stale-prev.Stale, x.DiskErrs-prev.DiskErrs,
				x.Goroutines, float64(x.LiveHeap)/(1<<20), x.Fds, fmtCounts(x.Errs))
			if x.Reads == 0 {
				t.Errorf("proc %d served no read in the window ending at %v", x.Proc, x.End.Round(time.Second))
			}
		}
		if !any {
			break
		}
	}
	for _, pr := range procs {
		for _, x := range append(slices.Clone(pr.wins), pr.final) {
			reads += x.Reads
			late += x.Late
			if x.CtlMax <= soakBound/2 {
				veryLate += x.VeryLate
			} else {
				// The machine itself stalled for a good part of the
				// bound (the control woke that late): such calls are the
				// scheduler's.
				stalled += x.VeryLate
			}
			for k, n := range x.Errs {
				errTotals[k] += n
				if strings.HasPrefix(k, "read/held/") {
					heldErrs += n
				}
			}
			for k, n := range x.LateBy {
				lateTotals[k] += n
			}
		}
		f := pr.final
		fmt.Fprintf(&b, "proc %d: before %d goroutines, %.1f MiB live heap, %d fds; after the workers stopped %d, %.1f MiB, %d\n",
			f.Proc, pr.base.Goroutines, float64(pr.base.LiveHeap)/(1<<20), pr.base.Fds, f.Goroutines, float64(f.LiveHeap)/(1<<20), f.Fds)
		if f.Goroutines > pr.base.Goroutines+soakGoroutineGrowth || f.Fds > pr.base.Fds+soakFdGrowth || f.LiveHeap > pr.base.LiveHeap+soakHeapGrowth {
			t.Errorf("proc %d grew: goroutines %d → %d (allowed +%d), fds %d → %d (+%d), live heap %d → %d MiB (+%d)",
				f.Proc, pr.base.Goroutines, f.Goroutines, soakGoroutineGrowth, pr.base.Fds, f.Fds, soakFdGrowth,
				pr.base.LiveHeap>>20, f.LiveHeap>>20, soakHeapGrowth>>20)
		}
	}
	fmt.Fprintf(&b, "totals: %d reads; errors %s; late %d (%s), very late %d (and %d in windows where the control itself was later than %v); read errors on keys held locally: %d\n",
		reads, fmtCounts(errTotals), late, fmtCounts(lateTotals), veryLate, stalled, soakBound/2, heldErrs)
	t.Log(b.String())
	if heldErrs != 0 {
		// Asserted under ServeStale (Revalidate does not serve a copy
		// Redis cannot vouch for, by design).
		report := t.Logf
		if p.strict {
			report = t.Errorf
		}
		report("%d errors on reads of keys held locally, want 0 (the processes' stderr names the first)", heldErrs)
		for _, pr := range procs {
			t.Log(pr.c.tail())
		}
	}
	if veryLate != 0 {
		t.Errorf("%d calls returned past their deadline + %v in windows where the machine was not that late itself, want 0", veryLate, soakBound)
	}
	if late != 0 {
		t.Logf("soak: %d calls returned past their deadline + %v (the issue's target; not asserted on this machine)", late, soakSlack)
	}
}

// read collects a child's reports until it says "stopped".
func (pr *soakProc) read(t *testing.T) {
	defer close(pr.done)
	for l := range pr.c.lines {
		tag, body, _ := strings.Cut(l, " ")
		var w soakWindow
		switch tag {
		case "base", "win", "final":
			if err := json.Unmarshal([]byte(body), &w); err != nil {
				t.Errorf("%s: %q: %v", pr.c.name, l, err)
				return
			}
		}
		pr.mu.Lock()
		switch tag {
		case "base":
			pr.base = w
			close(pr.ready)
		case "win":
			pr.wins = append(pr.wins, w)
		case "final":
			pr.final = w
		}
		pr.mu.Unlock()
		if tag == "stopped" {
			return
		}
	}
}

func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var s []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s = append(s, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(s, " ")
}

// mountTmpfs mounts a tmpfs of size bytes at dir, unmounted in t.Cleanup
// after the processes using it are gone. It returns "" and why when the
// mount is refused (no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, dir string, size int64) (string, string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		return "", fmt.Sprintf("cannot mount a tmpfs to fill (%v): needs CAP_SYS_ADMIN", err)
	}
	// Registered before the children start: cleanups run last first, so
	// this runs after they are killed.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, ""
}

// fillDisk writes path until its filesystem is full and returns how many
// bytes it wrote.
func fillDisk(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
