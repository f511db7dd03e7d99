package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
)

// Stampede defaults.
const (
	DefaultProcesses          = 4
	DefaultStampedeGoroutines = 32
	DefaultOriginDelay        = 50 * time.Millisecond
	// DefaultStampedeRounds is how many cold keys each cold-key mode is
	// measured on.
	DefaultStampedeRounds = 3
	// stampedePace is the pause between one goroutine's reads in the
	// expiring-key rounds.
	stampedePace = 2 * time.Millisecond
	// workerStartTimeout bounds a worker's start and each round's
	// preparation; a round's run is bounded by its length plus this.
	workerStartTimeout = 30 * time.Second
)

// stampedePrefix starts every key the stampede scenario reads (the route
// of its caches); its origin counters live outside it.
const stampedePrefix = "bench:st:"

// workerProc is one running worker.
type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	msgs   chan workerMsg // closed when stdout ends
}

// stampede measures origin calls and latency when K processes × G
// goroutines miss one key at once, with the herd off, local (single-flight
// per process) and shared (the Redis lease), and on a key that expires
// under sustained reads with and without XFetch early refresh.
func stampede(ctx context.Context, c Config, e *env, p *progress) (*Section, error) {
	sec := &Section{Scenario: ScenarioStampede, Title: "stampede: K processes × G goroutines on one key with a slow origin"}
	if e.redis == nil {
		sec.Notes = append(sec.Notes, "skipped: needs Redis ("+e.redisDesc+")")
		return sec, nil
	}
	k, g := c.processes(), c.stampedeGoroutines()
	delay := c.originDelay()
	ttl := max(c.Duration/2, 4*delay)
	sustain := 4 * ttl
	var rounds []roundSpec
	add := func(r roundSpec) {
		i := len(rounds)
		r.Key = fmt.Sprintf("%s%s:%d", stampedePrefix, e.token, i)
		r.Counter = fmt.Sprintf("bench:stc:%s:%d", e.token, i)
		rounds = append(rounds, r)
	}
	for _, m := range []string{modeOff, modeLocal, modeShared} {
		for range DefaultStampedeRounds {
			add(roundSpec{Mode: m})
		}
	}
	add(roundSpec{Mode: modeXFetch, TTL: ttl, Beta: tiered.DefaultBeta, Duration: sustain, Pace: stampedePace})
	add(roundSpec{Mode: modeXFetch, TTL: ttl, Beta: -1, Duration: sustain, Pace: stampedePace})

	p.Step(fmt.Sprintf("%d worker processes × %d goroutines, %d rounds", k, g, len(rounds)), int64(len(rounds)), "rounds")
	results, err := runWorkers(ctx, e, workerConfig{Redis: e.redis.addrs, User: e.redis.user, Password: e.redis.password, TLSCA: e.redis.caPEM, Goroutines: g, OriginDelay: delay,
		ValueSize: c.ValueSize, Rounds: rounds}, k, p)
	if err != nil {
		return nil, err
	}
	cl, err := e.redis.client(redisNoCache())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	counter := func(r roundSpec) (int64, error) {
		n, err := cl.Do(ctx, cl.B().Get().Key(r.Counter).Build()).AsInt64()
		if err != nil && !rueidis.IsRedisNil(err) {
			return 0, fmt.Errorf("bench: stampede: read %s: %w", r.Counter, err)
		}
		return n, nil
	}

	cold := Table{
		Title: fmt.Sprintf("cold key: %d processes × %d goroutines call GetOrLoad on one missing key at once, origin %v + INCR; %d keys per mode",
			k, g, delay, DefaultStampedeRounds),
		Columns: []string{"herd", "route", "origin calls per key", "expected", "p50", "p99", "max", "errors"},
	}
	callsChart := Chart{Title: "stampede: origin calls per cold key", Kind: BarChart, XLabel: "herd", YLabel: "origin calls (log scale)", LogY: true}
	callSeries := Series{Name: "origin calls per key"}
	exp := Table{
		Title: fmt.Sprintf("expiring key: %d × %d goroutines read one key every %v for %v, TTL %v (≈%d expiries), origin %v",
			k, g, stampedePace, sustain, ttl, sustain/ttl, delay),
		Columns: []string{"refresh", "reads", "origin calls", "calls per TTL", "p50", "p99", "p99.9", "max", "errors"},
	}
	latChart := Chart{Title: "stampede: expiring key latency", Kind: BarChart, XLabel: "refresh", YLabel: "latency (ms, log scale)", LogY: true}
	p999s, maxs := Series{Name: "p99.9"}, Series{Name: "max"}
	modeInfo := map[string][3]string{
		modeOff:    {"off (loader called directly)", "none", strconv.Itoa(k * g)},
		modeLocal:  {"local single-flight", "memory", strconv.Itoa(k)},
		modeShared: {"shared lease", "memory+redis", "1"},
	}
	for _, m := range []string{modeOff, modeLocal, modeShared} {
		var calls, errs, minC, maxC int64 = 0, 0, -1, 0
		lat := NewRecorder()
		var firstErr string
		for i, r := range rounds {
			if r.Mode != m {
				continue
			}
			n, err := counter(r)
			if err != nil {
				return nil, err
			}
			calls += n
			if minC < 0 || n < minC {
				minC = n
			}
			maxC = max(maxC, n)
			for _, w := range results[i] {
				lat.Merge(recorderOf(w.Hist))
				errs += w.Errors
				if firstErr == "" {
					firstErr = w.Err
				}
			}
		}
		info := modeInfo[m]
		per := float64(calls) / DefaultStampedeRounds
		callsCell := fmt.Sprintf("%.1f", per)
		if minC != maxC {
			callsCell += fmt.Sprintf(" (%d–%d)", minC, maxC)
		}
		s := lat.Summary()
		cold.Rows = append(cold.Rows, []string{info[0], info[1], callsCell, info[2], fmtDur(s.P50), fmtDur(s.P99), fmtDur(s.Max), itoa64(errs)})
		callSeries.Points = append(callSeries.Points, Point{Label: m, Y: per})
		sec.Bench = append(sec.Bench, Bench{Name: "Stampede/cold/" + m, N: s.Count, Metrics: []Metric{
			{per, "origin-calls/key"}, {float64(s.P99.Nanoseconds()), "p99-ns"}}})
		if firstErr != "" {
			sec.Notes = append(sec.Notes, fmt.Sprintf("%s: %d errors, first: %s", m, errs, firstErr))
		}
	}
	for i, r := range rounds {
		if r.Mode != modeXFetch {
			continue
		}
		name := fmt.Sprintf("XFetch β=%g", r.Beta)
		if r.Beta < 0 {
			name = "none (β<0): refresh at expiry"
		}
		n, err := counter(r)
		if err != nil {
			return nil, err
		}
		lat := NewRecorder()
		var reads, errs int64
		for _, w := range results[i] {
			lat.Merge(recorderOf(w.Hist))
			reads += w.Reads
			errs += w.Errors
		}
		s := lat.Summary()
		periods := float64(r.Duration) / float64(r.TTL)
		exp.Rows = append(exp.Rows, []string{name, itoa64(reads), itoa64(n), fmt.Sprintf("%.2f", float64(n)/periods),
			fmtDur(s.P50), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Max), itoa64(errs)})
		label := "xfetch"
		if r.Beta < 0 {
			label = "at expiry"
		}
		p999s.Points = append(p999s.Points, Point{Label: label, Y: float64(s.P999) / 1e6})
		maxs.Points = append(maxs.Points, Point{Label: label, Y: float64(s.Max) / 1e6})
		sec.Bench = append(sec.Bench, Bench{Name: "Stampede/expiring/" + label, N: reads, Metrics: []Metric{
			{float64(n) / periods, "origin-calls/ttl"}, {float64(s.P99.Nanoseconds()), "p99-ns"}, {float64(s.P999.Nanoseconds()), "p99.9-ns"}}})
	}
	sec.Notes = append(sec.Notes,
		"processes: the bench binary re-executed as workers ("+WorkerEnv+"=1); every round starts in all of them at once; origin calls are counted across processes by a Redis INCR in the loader",
		"XFetch refreshes a hot value early by about δ·β·ln(reads per δ), δ the origin's duration: with many reads it refreshes well before expiry, once across the processes; without it every reader that meets the expired value waits for the one rebuild")
	callsChart.Series = []Series{callSeries}
	latChart.Series = []Series{p999s, maxs}
	sec.add(cold, callsChart)
	sec.add(exp, latChart)
	return sec, nil
}

// runWorkers starts k workers with cfg, runs every round in all of them at
// once, and returns each round's k results. Workers are killed if
// anything fails or ctx ends, and never outlive this call.
func runWorkers(ctx context.Context, e *env, cfg workerConfig, k int, p *progress) ([][]workerMsg, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%w: stampede needs its own executable: %v", ErrUnavailable, err)
	}
	line, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	procs := make([]*workerProc, 0, k)
	var readers sync.WaitGroup
	defer func() {
		for _, w := range procs {
			w.stdin.Close()
		}
		cancel() // kills any worker still running (exec.CommandContext)
		for _, w := range procs {
			w.cmd.Wait()
		}
		readers.Wait()
	}()
	fail := func(err error) ([][]workerMsg, error) {
		for i, w := range procs {
			if t := w.stderr.String(); t != "" {
				err = fmt.Errorf("%w\nworker %d stderr: %s", err, i, t)
			}
		}
		return nil, err
	}
	for range k {
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), WorkerEnv+"=1")
		setParentDeath(cmd)
		w := &workerProc{cmd: cmd, stderr: &tailBuffer{max: 8 << 10}, msgs: make(chan workerMsg, 4)}
		cmd.Stderr = w.stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return fail(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		w.stdin = stdin
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("bench: stampede: start worker: %w", err))
		}
		procs = append(procs, w)
		readers.Go(func() {
			defer close(w.msgs)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				var m workerMsg
				if json.Unmarshal(sc.Bytes(), &m) != nil {
					continue // not ours: ignore
				}
				select {
				case w.msgs <- m:
				case <-ctx.Done():
					return
				}
			}
		})
		if _, err := fmt.Fprintf(stdin, "%s\n", line); err != nil {
			return fail(fmt.Errorf("bench: stampede: configure worker: %w", err))
		}
	}
	// await collects one message per worker for round i.
	await := func(i int, want func(workerMsg) bool, limit time.Duration) ([]workerMsg, error) {
		timer := time.NewTimer(limit)
		defer timer.Stop()
		out := make([]workerMsg, len(procs))
		for j, w := range procs {
			select {
			case m, ok := <-w.msgs:
				if !ok {
					return nil, fmt.Errorf("bench: stampede: worker %d exited during round %d", j, i)
				}
				if m.Round != i || !want(m) {
					return nil, fmt.Errorf("bench: stampede: worker %d sent %+v during round %d", j, m, i)
				}
				out[j] = m
			case <-timer.C:
				return nil, fmt.Errorf("bench: stampede: round %d: worker %d did not answer within %v", i, j, limit)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return out, nil
	}
	results := make([][]workerMsg, len(cfg.Rounds))
	for i, r := range cfg.Rounds {
		p.Set(int64(i))
		if _, err := await(i, func(m workerMsg) bool { return m.Ready }, workerStartTimeout); err != nil {
			return fail(err)
		}
		for j, w := range procs {
			if _, err := io.WriteString(w.stdin, goLine+"\n"); err != nil {
				return fail(fmt.Errorf("bench: stampede: start round %d in worker %d: %w", i, j, err))
			}
		}
		res, err := await(i, func(m workerMsg) bool { return m.Done }, r.Duration+cfg.OriginDelay+workerStartTimeout)
		if err != nil {
			return fail(err)
		}
		results[i] = res
	}
	for _, w := range procs {
		w.stdin.Close()
	}
	for j, w := range procs {
		if err := w.cmd.Wait(); err != nil {
			return fail(fmt.Errorf("bench: stampede: worker %d: %w", j, err))
		}
	}
	return results, nil
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent
// use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
