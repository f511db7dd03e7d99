package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
)

// WorkerEnv is the environment variable that turns a bench binary into a
// stampede worker: the stampede scenario re-executes its own binary
// (os.Executable) with WorkerEnv=1, and the binary's main (or a test
// binary's TestMain) must then call Worker instead of its usual work.
const WorkerEnv = "THERMOS_BENCH_WORKER"

// Stampede modes: how a process's goroutines reach the slow origin.
const (
	modeOff    = "off"    // every goroutine calls the origin itself
	modeLocal  = "local"  // a memory-only route: single-flight per process
	modeShared = "shared" // a memory+Redis route: the herd's shared lease
	modeXFetch = "xfetch" // memory+Redis, a short TTL and sustained reads
)

// workerConfig is the first line a worker reads on stdin.
type workerConfig struct {
	Redis       []string      `json:"redis"` // addresses
	User        string        `json:"user,omitempty"`
	Password    string        `json:"password,omitempty"` // sent on the worker's stdin, never in its arguments or environment
	TLSCA       []byte        `json:"tls_ca,omitempty"`   // PEM; set: connect with TLS
	Goroutines  int           `json:"goroutines"`
	OriginDelay time.Duration `json:"origin_delay_ns"`
	ValueSize   int           `json:"value_size"`
	Rounds      []roundSpec   `json:"rounds"`
}

// roundSpec is one stampede round, run by every worker at once.
type roundSpec struct {
	Mode    string        `json:"mode"`
	Key     string        `json:"key"`     // the key every goroutine reads
	Counter string        `json:"counter"` // Redis key INCRed by every origin call
	TTL     time.Duration `json:"ttl_ns,omitempty"`
	Beta    float64       `json:"beta,omitempty"`
	// Duration of sustained reads (xfetch); zero means one read per
	// goroutine.
	Duration time.Duration `json:"duration_ns,omitempty"`
	Pace     time.Duration `json:"pace_ns,omitempty"` // pause between one goroutine's reads
}

// workerMsg is a line a worker prints on stdout.
type workerMsg struct {
	Round  int                    `json:"round"`
	Ready  bool                   `json:"ready,omitempty"`
	Done   bool                   `json:"done,omitempty"`
	Calls  int64                  `json:"calls,omitempty"` // origin calls made by this process
	Reads  int64                  `json:"reads,omitempty"`
	Errors int64                  `json:"errors,omitempty"`
	Err    string                 `json:"err,omitempty"` // the first error
	Hist   *hdrhistogram.Snapshot `json:"hist,omitempty"`
}

// goLine is what the parent writes to start a round.
const goLine = "go"

// errWorkerInput is returned by Worker when stdin ends or is malformed.
var errWorkerInput = errors.New("bench: worker: bad or missing input from the parent")

// Worker runs a stampede worker: it reads its configuration from stdin,
// and for each round prepares, prints a ready line, waits for the parent's
// go line, runs the round and prints its result, as JSON lines on stdout.
// It returns when the rounds are done, ctx ends or stdin closes (the parent
// exited), so a worker never outlives its parent's pipe.
func Worker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan string)
	go func() { // ends when stdin closes: the parent exits or is done
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func() (string, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", errWorkerInput
			}
			return l, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	first, err := next()
	if err != nil {
		return err
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(first), &cfg); err != nil {
		return fmt.Errorf("%w: %v", errWorkerInput, err)
	}
	conn := &redisConn{addrs: cfg.Redis, user: cfg.User, password: cfg.Password}
	if len(cfg.TLSCA) > 0 {
		if conn.tls, err = tlsFromPEM(cfg.TLSCA); err != nil {
			return fmt.Errorf("%w: tls_ca: %v", errWorkerInput, err)
		}
	}
	cl, err := conn.client(redisNoCache())
	if err != nil {
		return err
	}
	defer cl.Close()
	enc := json.NewEncoder(stdout)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i, r := range cfg.Rounds {
		w, err := newWorkerRound(ctx, cfg, conn, r, cl, logger)
		if err != nil {
			return err
		}
		if err := enc.Encode(workerMsg{Round: i, Ready: true}); err != nil {
			w.close()
			return err
		}
		l, err := next()
		if err != nil || l != goLine {
			w.close()
			return fmt.Errorf("%w: want %q, got %q (%v)", errWorkerInput, goLine, l, err)
		}
		msg := w.run(ctx, cfg.Goroutines)
		msg.Round = i
		w.close()
		if err := enc.Encode(msg); err != nil {
			return err
		}
	}
	return nil
}

// workerRound is one round's cache and slow origin in a worker.
type workerRound struct {
	spec  roundSpec
	cache *tiered.Cache // nil in mode off
	load  tiered.Loader
	calls atomic.Int64
}

func newWorkerRound(ctx context.Context, cfg workerConfig, conn *redisConn, r roundSpec, cl rueidis.Client, logger *slog.Logger) (*workerRound, error) {
	w := &workerRound{spec: r}
	w.load = tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		w.calls.Add(1)
		t := time.NewTimer(cfg.OriginDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := cl.Do(ctx, cl.B().Incr().Key(r.Counter).Build()).Error(); err != nil {
			return nil, err
		}
		return valueFor(key, cfg.ValueSize), nil
	})
	route := tiered.Route{Prefix: stampedePrefix, TTL: r.TTL, Beta: r.Beta}
	switch r.Mode {
	case modeOff:
		return w, nil
	case modeLocal:
		route.Tiers = tiered.Memory
	case modeShared, modeXFetch:
		route.Tiers = tiered.Memory | tiered.Redis
	default:
		return nil, fmt.Errorf("%w: unknown mode %q", errWorkerInput, r.Mode)
	}
	opts := &tiered.Options{Routes: []tiered.Route{route}, Logger: logger}
	if route.Tiers&tiered.Redis != 0 {
		ro := conn.option(rueidis.ClientOption{})
		opts.Redis = &ro
	}
	c, err := tiered.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("bench: worker: %w", err)
	}
	w.cache = c
	return w, nil
}

// run drives the round with g goroutines and returns its result.
func (w *workerRound) run(ctx context.Context, g int) workerMsg {
	var mu sync.Mutex
	msg := workerMsg{Done: true}
	all := NewRecorder()
	deadline := time.Now().Add(w.spec.Duration)
	var wg sync.WaitGroup
	for range g {
		wg.Go(func() {
			rec := NewRecorder()
			var reads, errs int64
			var first error
			for ctx.Err() == nil {
				t0 := time.Now()
				var err error
				if w.cache == nil {
					_, err = w.load.Load(ctx, w.spec.Key)
				} else {
					_, _, err = w.cache.GetOrLoad(ctx, w.spec.Key, w.load)
				}
				rec.Record(time.Since(t0))
				reads++
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
				}
				if w.spec.Duration == 0 || !time.Now().Before(deadline) {
					break
				}
				if w.spec.Pace > 0 {
					time.Sleep(w.spec.Pace) // pacing the sustained load, not synchronising
				}
			}
			mu.Lock()
			defer mu.Unlock()
			all.Merge(rec)
			msg.Reads += reads
			msg.Errors += errs
			if first != nil && msg.Err == "" {
				msg.Err = first.Error()
			}
		})
	}
	wg.Wait()
	msg.Calls = w.calls.Load()
	msg.Hist = all.h.Export()
	return msg
}

func (w *workerRound) close() {
	if w.cache != nil {
		w.cache.Close()
	}
}

// recorderOf rebuilds a Recorder from a worker's snapshot.
func recorderOf(s *hdrhistogram.Snapshot) *Recorder {
	if s == nil {
		return NewRecorder()
	}
	return &Recorder{h: hdrhistogram.Import(s)}
}

// itoa64 formats n.
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
