package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
)

// soakConfig configures one soak process.
type soakConfig struct {
	Addr        string
	Dir         string
	Proc, Procs int // this process's index, and how many there are
	Keys        int
	Workers     int
	Pace        time.Duration // mean pause between a worker's operations
	Deadline    time.Duration // every operation's context deadline
	Slack       time.Duration // a call past Deadline+Slack is counted late
	Bound       time.Duration // ... and past Deadline+Bound, very late
	Window      time.Duration
	Revalidate  bool // Options.Unverified: Revalidate (else ServeStale)
	MemoryBytes int64
	Seed        int64
}

// soakWindow is one process's figures over one window (the final one:
// after its workers stopped).
type soakWindow struct {
	Proc  int           `json:"proc"`
	W     int           `json:"w"`
	End   time.Duration `json:"end"` // since the workers started
	Reads int64         `json:"reads"`
	Sets  int64         `json:"sets"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
	// Late counts calls that returned past Deadline+Slack, VeryLate past
	// Deadline+Bound.
	Late int64 `json:"late"`
	// CtlMax is how late the control (a bare context wait) woke at most.
	CtlMax   time.Duration `json:"ctl_max"`
	VeryLate int64         `json:"very_late"`
	// Errs counts errors by operation, class and sentinel:
	// "read/held/unavailable": a read of a key this process held.
	Errs       map[string]int64 `json:"errs,omitempty"`
	LateBy     map[string]int64 `json:"late_by,omitempty"` // late calls by operation/outcome
	Loads      int64            `json:"loads"`
	Degraded   int64            `json:"degraded"`
	Stale      int64            `json:"stale"`
	DiskErrs   int64            `json:"disk_errs"`
	Goroutines int              `json:"goroutines"`
	LiveHeap   uint64           `json:"live_heap"`
	Fds        int              `json:"fds"`
}

// soakStats is what the workers record; the window loop takes and resets
// it.
type soakStats struct {
	mu        sync.Mutex
	lat       []time.Duration
	reads     int64
	sets      int64
	late      int64
	veryLate  int64
	errs      map[string]int64
	lateBy    map[string]int64
	maxLat    time.Duration
	ctlMax    time.Duration
	heldNotes int // held-read errors written to stderr
	lateNotes int
}

// runSoak is a soak process: GetOrLoad (90%) and Set (10%) of zipfian keys
// through one tiered.Cache on a Memory|Disk|Redis route, with a loader
// reading an in-process origin that Set writes first. Only the owner of a
// key (key index mod Procs) sets it, and the cache's early refresh is off:
// another process writes a key of this one only by loading it when Redis
// has none. A read counts as one of a key held locally when this process's
// last read of the key was answered from memory or disk (its Sources record says)
// with no Set of the key in flight, and it has started no Set of it since.
func runSoak(rio *roleIO) error {
	var cfg soakConfig
	if err := roleConfig(&cfg); err != nil {
		return err
	}
	policy := tiered.ServeStale
	if cfg.Revalidate {
		policy = tiered.Revalidate
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := tiered.Open(ctx, &tiered.Options{
		Routes: []tiered.Route{{Prefix: "s:", Tiers: tiered.Memory | tiered.Disk | tiered.Redis,
			TTL: time.Hour, MaxStale: time.Hour, Beta: -1}},
		Redis:       &rueidis.ClientOption{InitAddress: []string{cfg.Addr}},
		Dir:         cfg.Dir,
		MemoryBytes: cfg.MemoryBytes,
		Unverified:  policy,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()

	var origin sync.Map // key → []byte
	var loads atomic.Int64
	loader := tiered.LoaderFunc(func(_ context.Context, key string) ([]byte, error) {
		loads.Add(1)
		if v, ok := origin.Load(key); ok {
			return v.([]byte), nil
		}
		return padded("init:" + key), nil
	})
	// A read is of a key held locally when this process's last read of it
	// was answered from memory or disk while no Set of it by this process
	// was in flight, and none has started since: setSeq counts the Sets'
	// starts and ends (odd: one in flight), heldAt is setSeq over that
	// read, plus one (zero: never).
	setSeq := make([]atomic.Int64, cfg.Keys)
	heldAt := make([]atomic.Int64, cfg.Keys)
	st := &soakStats{errs: map[string]int64{}, lateBy: map[string]int64{}}
	out := &lockedWriter{w: bufio.NewWriter(os.Stdout)}

	record := func(op, class string, d time.Duration, err error) {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.lat = append(st.lat, d)
		st.maxLat = max(st.maxLat, d)
		if op == "read" {
			st.reads++
		} else {
			st.sets++
		}
		if err != nil {
			st.errs[op+"/"+class+"/"+outcome(err)]++
			if class == "held" && st.heldNotes < 20 {
				st.heldNotes++
				// What the cache saw: an entry dropped by a revalidation
				// (Redis held another version) or an epoch bump tells why
				// the key was no longer held.
				cs := c.Stats()
				rs := cs.Routes[0]
				fmt.Fprintf(os.Stderr, "%s held-read error after %v: %v (epoch bumps %d, dropped %d+%d, revalidated %d+%d, unverified reads %d, stale serves %d)\n",
					time.Now().Format("15:04:05.000"), d, err, cs.EpochBumps, cs.Dropped, rs.Dropped, cs.Revalidated, rs.Revalidated, rs.UnverifiedReads, rs.StaleServes)
			}
		}
		if d > cfg.Deadline+cfg.Slack {
			st.late++
			st.lateBy[op+"/"+outcome(err)]++
			if st.lateNotes < 20 {
				st.lateNotes++
				fmt.Fprintf(os.Stderr, "%s late %s (%s) after %v: %v\n", time.Now().Format("15:04:05.000"), op, class, d, err)
			}
		}
		if d > cfg.Deadline+cfg.Bound {
			st.veryLate++
		}
	}

	var seq atomic.Int64
	work := func(ctx context.Context, w int) {
		r := rand.New(rand.NewSource(cfg.Seed + int64(w)))
		zipf := rand.NewZipf(r, 1.1, 1, uint64(cfg.Keys-1))
		for ctx.Err() == nil {
			i := int(zipf.Uint64())
			key := "s:" + strconv.Itoa(i)
			mine := i%cfg.Procs == cfg.Proc
			octx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
			if r.Intn(10) == 0 && mine {
				v := padded(fmt.Sprintf("%s=%d.%d", key, cfg.Proc, seq.Add(1)))
				origin.Store(key, v)
				setSeq[i].Add(1)
				start := time.Now()
				err := c.Set(octx, key, v, 0)
				setSeq[i].Add(1)
				record("set", "own", time.Since(start), err)
			} else {
				at := setSeq[i].Load()
				class := "other"
				if mine && at%2 == 0 && heldAt[i].Load() == at+1 {
					class = "held"
				}
				det := &tiered.Sources{}
				start := time.Now()
				_, _, err := c.GetOrLoad(tiered.WithSources(octx, det), key, loader)
				d := time.Since(start)
				if src, _ := det.Source(key); mine && err == nil && at%2 == 0 && setSeq[i].Load() == at &&
					(src == tiered.SourceMemory || src == tiered.SourceDisk || src == tiered.SourceStale) {
					heldAt[i].Store(at + 1)
				}
				record("read", class, d, err)
			}
			cancel()
			// Pacing, not waiting on a condition: two processes within two
			// shared cores.
			time.Sleep(time.Duration(r.Int63n(int64(2*cfg.Pace) + 1)))
		}
	}
	// The other process's sets of its keys are the only other writes; a
	// key the other process owns is never "held".

	sample := func(win *soakWindow) {
		s := c.Stats()
		for _, r := range s.Routes {
			win.Degraded += r.DegradedLoads
			win.Stale += r.StaleServes
		}
		win.DiskErrs = s.DiskWriteErrors
		win.Loads = loads.Load()
		win.Goroutines = runtime.NumGoroutine()
		win.LiveHeap = liveHeap()
		if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
			win.Fds = len(fds)
		}
	}
	take := func(w int, end time.Duration) soakWindow {
		st.mu.Lock()
		lat := st.lat
		win := soakWindow{Proc: cfg.Proc, W: w, End: end, Reads: st.reads, Sets: st.sets, Max: st.maxLat,
			Late: st.late, VeryLate: st.veryLate, Errs: st.errs, LateBy: st.lateBy, CtlMax: st.ctlMax}
		st.lat, st.reads, st.sets, st.maxLat, st.late, st.veryLate, st.ctlMax = nil, 0, 0, 0, 0, 0, 0
		st.errs, st.lateBy = map[string]int64{}, map[string]int64{}
		st.mu.Unlock()
		slices.Sort(lat)
		if len(lat) > 0 {
			win.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		}
		sample(&win)
		return win
	}

	// What starts on first use (the herd's group with its subscription,
	// the write path's calls) runs once before the base sample, so the
	// growth checked at the end is what the run left behind, not what a
	// first GetOrLoad starts for the cache's life.
	wctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	_ = c.Set(wctx0, "s:warm", padded("s:warm"), 0)
	_, _, _ = c.GetOrLoad(wctx0, "s:warm-load", loader)
	cancel0()
	var base soakWindow
	sample(&base)
	base.Proc, base.W = cfg.Proc, -1
	out.line("ready")
	out.json("base", base)
	if cmd := rio.command(); cmd != "go" {
		return fmt.Errorf("want go, got %q", cmd)
	}
	wctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() { work(wctx, w) })
	}
	started := time.Now()
	// The control: a bare wait on a context with the operations' deadline.
	// How late it wakes is the machine's lateness, not the library's.
	go func() {
		for wctx.Err() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
			dl, _ := ctx.Deadline()
			<-ctx.Done()
			over := time.Since(dl)
			cancel()
			st.mu.Lock()
			st.ctlMax = max(st.ctlMax, over)
			st.mu.Unlock()
		}
	}()
	winDone := make(chan struct{})
	go func() {
		defer close(winDone)
		t := time.NewTicker(cfg.Window)
		defer t.Stop()
		for w := 0; ; w++ {
			select {
			case <-t.C:
				out.json("win", take(w, time.Since(started)))
			case <-wctx.Done():
				return
			}
		}
	}()
	for {
		switch cmd := rio.command(); cmd {
		case "stop":
			stop()
			wg.Wait()
			<-winDone
			last := take(-2, time.Since(started))
			// Shared loads and background revalidation outlive the calls
			// that started them by a bounded time: wait for the goroutine
			// count to come back near its level before the workers, then
			// sample.
			deadline := time.Now().Add(20 * time.Second)
			for runtime.NumGoroutine() > base.Goroutines+4 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // polling a count
			}
			final := take(-2, time.Since(started))
			final.Errs, final.LateBy = last.Errs, last.LateBy
			final.Reads, final.Sets, final.Late, final.VeryLate = last.Reads, last.Sets, last.Late, last.VeryLate
			final.P99, final.Max = last.P99, last.Max
			out.json("final", final)
			out.line("stopped")
		case "quit":
			return nil
		}
	}
}

// padded is s padded to 100 bytes: a value of a typical small size.
func padded(s string) []byte {
	if len(s) >= 100 {
		return []byte(s)
	}
	return []byte(s + strings.Repeat(".", 100-len(s)))
}

// liveHeap is the heap the last GC found live: no forced collection.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// lockedWriter writes whole lines to the parent from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lockedWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.WriteString(s + "\n")
	l.w.Flush()
}

func (l *lockedWriter) json(tag string, v any) {
	b, _ := json.Marshal(v)
	l.line(tag + " " + string(b))
}
