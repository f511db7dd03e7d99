package herd

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"short lease", Options{LeaseTTL: time.Millisecond}},
		{"negative wait", Options{WaitTimeout: -1}},
		{"negative load timeout", Options{LoadTimeout: -1}},
		{"brace in lock prefix", Options{LockPrefix: "l{"}},
		{"brace in channel prefix", Options{ChannelPrefix: "c}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(&tt.opts)
			if !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("New(%+v) error = %v, want ErrInvalidOptions", tt.opts, err)
			}
			if g != nil {
				t.Errorf("New returned a Group with an error")
			}
		})
	}
}

func TestNewDoesNotWriteOptions(t *testing.T) {
	opts := &Options{}
	newGroup(t, opts)
	if !reflect.DeepEqual(*opts, Options{}) {
		t.Errorf("New changed its options to %+v", *opts)
	}
}

func TestDoLocalSingleFlight(t *testing.T) {
	const n = 64
	g := newGroup(t, nil)
	var origin counter
	release := make(chan struct{})
	load := origin.load("v", 0, release)
	var wg sync.WaitGroup
	results := make([]Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = g.Do(context.Background(), "k", nil, load) })
	}
	waitFor(t, "63 callers to join the flight", 10*time.Second, func() bool { return g.Stats().SharedWaits == n-1 })
	close(release)
	wg.Wait()
	if got := origin.calls.Load(); got != 1 {
		t.Errorf("origin calls = %d, want 1", got)
	}
	shared := 0
	for i := range n {
		if errs[i] != nil || string(results[i].Value) != "v" || !results[i].Loaded || results[i].Stored {
			t.Errorf("caller %d: %+v, %v; want v loaded, not stored", i, results[i], errs[i])
		}
		if results[i].Shared {
			shared++
		}
	}
	if shared != n-1 {
		t.Errorf("shared callers = %d, want %d", shared, n-1)
	}
	if s := g.Stats(); s.Flights != 1 || s.Loads != 1 {
		t.Errorf("stats flights=%d loads=%d, want 1 and 1", s.Flights, s.Loads)
	}
}

func TestDoCancelledWaiterDoesNotCancelFlight(t *testing.T) {
	g := newGroup(t, nil)
	started := make(chan struct{})
	release := make(chan struct{})
	load := func(ctx context.Context) ([]byte, time.Duration, error) {
		close(started)
		select {
		case <-release:
			return []byte("v"), 0, nil
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx, "k", nil, load)
		firstErr <- err
	}()
	<-started
	second := make(chan Result, 1)
	go func() {
		r, _ := g.Do(context.Background(), "k", nil, load)
		second <- r
	}()
	waitFor(t, "second caller to join", 10*time.Second, func() bool { return g.Stats().SharedWaits == 1 })
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller error = %v, want context.Canceled", err)
	}
	close(release)
	if r := <-second; string(r.Value) != "v" || !r.Loaded {
		t.Errorf("second caller got %+v, want the loaded v", r)
	}
}

func TestDoRechecksLookupInsideFlight(t *testing.T) {
	g := newGroup(t, nil)
	var origin counter
	lookup := func(context.Context) ([]byte, bool, error) { return []byte("cached"), true, nil }
	r, err := g.Do(context.Background(), "k", lookup, origin.load("v", 0, nil))
	if err != nil || string(r.Value) != "cached" || r.Loaded {
		t.Errorf("Do = %+v, %v; want cached, not loaded", r, err)
	}
	if got := origin.calls.Load(); got != 0 {
		t.Errorf("origin calls = %d, want 0", got)
	}
	lookupErr := errors.New("cache broken")
	_, err = g.Do(context.Background(), "k", func(context.Context) ([]byte, bool, error) { return nil, false, lookupErr }, origin.load("v", 0, nil))
	if !errors.Is(err, lookupErr) {
		t.Errorf("Do with a failing lookup: error = %v, want %v", err, lookupErr)
	}
}

func TestDoErrorReachesEveryWaiter(t *testing.T) {
	const n = 8
	g := newGroup(t, nil)
	boom := errors.New("origin down")
	release := make(chan struct{})
	var calls counter
	load := func(ctx context.Context) ([]byte, time.Duration, error) {
		calls.calls.Add(1)
		<-release
		return nil, 0, boom
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = g.Do(context.Background(), "k", nil, load) })
	}
	waitFor(t, "waiters to join", 10*time.Second, func() bool { return g.Stats().SharedWaits == n-1 })
	close(release)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("waiter %d error = %v, want %v", i, err, boom)
		}
	}
	// Not stored: the next Do loads again.
	var origin counter
	if r, err := g.Do(context.Background(), "k", nil, origin.load("v", 0, nil)); err != nil || !r.Loaded {
		t.Errorf("Do after an error = %+v, %v; want a fresh load", r, err)
	}
	if s := g.Stats(); s.LoadErrors != 1 || calls.calls.Load() != 1 {
		t.Errorf("load errors = %d, failing calls = %d; want 1 and 1", s.LoadErrors, calls.calls.Load())
	}
}

func TestDoPanicBecomesError(t *testing.T) {
	g := newGroup(t, nil)
	_, err := g.Do(context.Background(), "k", nil, func(context.Context) ([]byte, time.Duration, error) {
		panic("kaboom")
	})
	if !errors.Is(err, ErrPanic) {
		t.Fatalf("error = %v, want ErrPanic", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "kaboom") || !strings.Contains(msg, "goroutine") {
		t.Errorf("panic error text lacks the value or the stack: %q", msg)
	}
	if s := g.Stats(); s.Panics != 1 {
		t.Errorf("stats panics = %d, want 1", s.Panics)
	}
}

func TestDoBadInput(t *testing.T) {
	g := newGroup(t, nil)
	var origin counter
	if _, err := g.Do(context.Background(), "", nil, origin.load("v", 0, nil)); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Do with an empty key: error = %v, want ErrEmptyKey", err)
	}
	neg := func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), -time.Second, nil }
	if _, err := g.Do(context.Background(), "k", nil, neg); !errors.Is(err, ErrNegativeTTL) {
		t.Errorf("Do with a negative ttl: error = %v, want ErrNegativeTTL", err)
	}
	if got := origin.calls.Load(); got != 0 {
		t.Errorf("origin called %d times for an empty key", got)
	}
}

func TestDoLoadTimeout(t *testing.T) {
	g := newGroup(t, &Options{LoadTimeout: 50 * time.Millisecond})
	var origin counter
	_, err := g.Do(context.Background(), "k", nil, origin.load("v", 0, make(chan struct{})))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrTimeout and context.DeadlineExceeded", err)
	}
}

func TestCloseEndsFlightsAndIsIdempotent(t *testing.T) {
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var origin counter
	errc := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), "k", nil, origin.load("v", 0, make(chan struct{})))
		errc <- err
	}()
	waitFor(t, "the load to start", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("waiter error after Close = %v, want ErrClosed", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := g.Do(context.Background(), "k", nil, origin.load("v", 0, nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: error = %v, want ErrClosed", err)
	}
	if g.Refresh("k", nil, origin.load("v", 0, nil)) {
		t.Errorf("Refresh after Close started a rebuild")
	}
}

func TestRefreshLocal(t *testing.T) {
	g := newGroup(t, nil)
	var origin counter
	release := make(chan struct{})
	load := origin.load("new", 0, release)
	if !g.Refresh("k", nil, load) {
		t.Fatalf("first Refresh = false, want true")
	}
	if g.Refresh("k", nil, load) {
		t.Errorf("second Refresh while one runs = true, want false")
	}
	// A Do arriving meanwhile shares the refresh.
	done := make(chan Result, 1)
	go func() {
		r, _ := g.Do(context.Background(), "k", nil, load)
		done <- r
	}()
	waitFor(t, "Do to join the refresh", 10*time.Second, func() bool { return g.Stats().SharedWaits == 1 })
	close(release)
	if r := <-done; string(r.Value) != "new" || !r.Shared {
		t.Errorf("Do during a refresh = %+v, want the shared new value", r)
	}
	if got := origin.calls.Load(); got != 1 {
		t.Errorf("origin calls = %d, want 1", got)
	}
}
