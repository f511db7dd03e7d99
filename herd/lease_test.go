package herd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// variant is one way of talking to Redis: scripts, transactions forced by
// the option, and transactions found by the Group on a server that refuses
// scripts.
type variant struct {
	name      string
	args      []string
	noScripts bool
}

var variants = []variant{
	{name: "scripts"},
	{name: "transactions", noScripts: true},
	{name: "scripts refused", args: []string{"--rename-command", "EVAL", "", "--rename-command", "EVALSHA", ""}},
}

// fleet is a Redis and a way to make Groups that behave as separate
// processes: each has its own client.
type fleet struct {
	t   *testing.T
	srv *redistest.Server
	c   rueidis.Client // for the test's own reads
	v   variant
}

func newFleet(t *testing.T, v variant) *fleet {
	srv, c := startRedis(t, v.args...)
	return &fleet{t: t, srv: srv, c: c, v: v}
}

func (f *fleet) group(opts Options) *Group {
	f.t.Helper()
	opts.Client = newClient(f.t, f.srv.Addr())
	opts.DisableScripting = opts.DisableScripting || f.v.noScripts
	opts.Logger = slog.New(slog.DiscardHandler)
	return newGroup(f.t, &opts)
}

func forEachVariant(t *testing.T, fn func(t *testing.T, f *fleet)) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) { fn(t, newFleet(t, v)) })
	}
}

// TestSharedStampede: 4 Groups (one client each, as 4 processes) x 16
// goroutines on one cold key call the origin once, and every caller gets
// the value.
func TestSharedStampede(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		const groups, per = 4, 16
		gs := make([]*Group, groups)
		for i := range gs {
			gs[i] = f.group(Options{LeaseTTL: 2 * time.Second})
		}
		var origin counter
		release := make(chan struct{})
		load := origin.load("hot", time.Minute, release)
		var wg sync.WaitGroup
		var mu sync.Mutex
		bad := 0
		for _, g := range gs {
			for range per {
				wg.Go(func() {
					r, err := g.Do(context.Background(), "cold", nil, load)
					if err != nil || string(r.Value) != "hot" {
						mu.Lock()
						bad++
						mu.Unlock()
						t.Errorf("Do = %+v, %v", r, err)
					}
				})
			}
		}
		waitFor(t, "every group to wait or hold", 20*time.Second, func() bool {
			waiting := 0
			for _, g := range gs {
				s := g.Stats()
				waiting += int(s.LockWaits + s.LockAcquired)
			}
			return waiting == groups
		})
		close(release)
		wg.Wait()
		if got := origin.calls.Load(); got != 1 {
			t.Errorf("origin calls = %d, want 1", got)
		}
		if v, ok := redisGet(t, f.c, "cold"); !ok || v != "hot" {
			t.Errorf("redis value = %q, %v; want hot", v, ok)
		}
		var s Stats
		for _, g := range gs {
			st := g.Stats()
			s.Wakeups += st.Wakeups
			s.FencedWrites += st.FencedWrites
			s.ScriptFallback = s.ScriptFallback || st.ScriptFallback
		}
		if s.FencedWrites != 1 {
			t.Errorf("fenced writes = %d, want 1", s.FencedWrites)
		}
		if want := f.v.noScripts || f.v.args != nil; s.ScriptFallback != want {
			t.Errorf("script fallback = %v, want %v", s.ScriptFallback, want)
		}
	})
}

// TestFencedWriteRefusedAfterLeaseLoss: a holder paused past its lease (its
// renewer never runs) cannot overwrite the value written by the next holder.
func TestFencedWriteRefusedAfterLeaseLoss(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		const lease = 100 * time.Millisecond
		paused := f.group(Options{LeaseTTL: lease})
		paused.renewHook = func() bool { return false }
		// Only the paused holder's lease must run out; the next holder's is
		// long, so a loaded machine cannot make it lose its own.
		next := f.group(Options{LeaseTTL: 10 * time.Second})
		lockKey := paused.keysFor("k").lock

		var old counter
		release := make(chan struct{})
		oldDone := make(chan Result, 1)
		go func() {
			r, err := paused.Do(context.Background(), "k", nil, old.load("old", time.Minute, release))
			if err != nil {
				t.Errorf("paused holder: %v", err)
			}
			oldDone <- r
		}()
		waitFor(t, "the paused holder to load", 10*time.Second, func() bool { return old.calls.Load() == 1 })
		waitFor(t, "the paused holder's lease to expire", 10*time.Second, func() bool {
			_, held := redisGet(t, f.c, lockKey)
			return !held
		})
		var fresh counter
		r, err := next.Do(context.Background(), "k", nil, fresh.load("new", time.Minute, nil))
		if err != nil || !r.Stored {
			t.Fatalf("next holder: %+v, %v; want a stored value", r, err)
		}
		close(release)
		r = <-oldDone
		if r.Stored || string(r.Value) != "old" {
			t.Errorf("paused holder result = %+v, want its value, not stored", r)
		}
		if v, _ := redisGet(t, f.c, "k"); v != "new" {
			t.Errorf("redis value = %q, want new", v)
		}
		if s := paused.Stats(); s.FencedWritesRefused != 1 || s.LockLosses != 1 {
			t.Errorf("paused holder stats: refused=%d losses=%d, want 1 and 1", s.FencedWritesRefused, s.LockLosses)
		}
		if _, held := redisGet(t, f.c, lockKey); held {
			t.Errorf("lock still held after both holders finished")
		}
	})
}

// TestLeaseRenewal: a load five times longer than the lease keeps the lease:
// one origin call, no second holder.
func TestLeaseRenewal(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		// Renewal runs every lease/3: the lease must outlast a renewer
		// starved for a while by a loaded 2-core machine under -race.
		const lease = 400 * time.Millisecond
		holder := f.group(Options{LeaseTTL: lease})
		waiter := f.group(Options{LeaseTTL: lease, WaitTimeout: lease / 2})
		var origin counter
		slow := func(ctx context.Context) ([]byte, time.Duration, error) {
			origin.calls.Add(1)
			select {
			case <-time.After(5 * lease):
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
			return []byte("v"), time.Minute, nil
		}
		first := make(chan error, 1)
		go func() {
			_, err := holder.Do(context.Background(), "k", nil, slow)
			first <- err
		}()
		waitFor(t, "the holder to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
		r, err := waiter.Do(context.Background(), "k", nil, slow)
		if err != nil || string(r.Value) != "v" || r.Loaded {
			t.Errorf("waiter = %+v, %v; want v from the holder", r, err)
		}
		if err := <-first; err != nil {
			t.Errorf("holder: %v", err)
		}
		if got := origin.calls.Load(); got != 1 {
			t.Errorf("origin calls = %d, want 1", got)
		}
		hs, ws := holder.Stats(), waiter.Stats()
		if hs.LockRenewals < 3 || hs.LockLosses != 0 || ws.LockAcquired != 0 {
			t.Errorf("renewals=%d losses=%d waiter acquisitions=%d; want >=3, 0, 0", hs.LockRenewals, hs.LockLosses, ws.LockAcquired)
		}
	})
}

// TestErrorReleasesLeaseAndWakesWaiters: an error in the holder is not
// stored, releases the lease and wakes the other process, which loads at once.
func TestErrorReleasesLeaseAndWakesWaiters(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		// A long lease and wait: only the wake-up can make this quick.
		opts := Options{LeaseTTL: 30 * time.Second, WaitTimeout: 30 * time.Second}
		a, b := f.group(opts), f.group(opts)
		release := make(chan struct{})
		var failing counter
		boom := errors.New("origin down")
		aErr := make(chan error, 1)
		go func() {
			_, err := a.Do(context.Background(), "k", nil, func(context.Context) ([]byte, time.Duration, error) {
				failing.calls.Add(1)
				<-release
				panic(boom)
			})
			aErr <- err
		}()
		waitFor(t, "a to load", 10*time.Second, func() bool { return failing.calls.Load() == 1 })
		var origin counter
		sleeping := make(chan struct{}, 1)
		b.beforeWait = func(string) { sleeping <- struct{}{} }
		bRes := make(chan Result, 1)
		go func() {
			r, err := b.Do(context.Background(), "k", nil, origin.load("v", time.Minute, nil))
			if err != nil {
				t.Errorf("b: %v", err)
			}
			bRes <- r
		}()
		<-sleeping // subscribed and asleep: only a notification can wake it soon
		start := time.Now()
		close(release)
		if err := <-aErr; !errors.Is(err, ErrPanic) {
			t.Errorf("a error = %v, want ErrPanic", err)
		}
		r := <-bRes
		if took := time.Since(start); took > 10*time.Second || !r.Loaded || !r.Stored {
			t.Errorf("b = %+v after %v; want its own stored load, quickly", r, took)
		}
		if s := b.Stats(); s.LockSteals != 0 || s.Wakeups != 1 {
			t.Errorf("b stats steals=%d wake-ups=%d; want a woken take-over", s.LockSteals, s.Wakeups)
		}
	})
}

// TestWakeFromInvalidation: Wake makes a waiting flight look again at once
// (here, its lookup finds the value an invalidation announced).
func TestWakeFromInvalidation(t *testing.T) {
	f := newFleet(t, variants[0])
	opts := Options{LeaseTTL: 30 * time.Second, WaitTimeout: 30 * time.Second}
	holder, waiter := f.group(opts), f.group(opts)
	var origin counter
	go func() { _, _ = holder.Do(context.Background(), "k", nil, origin.load("v", 0, make(chan struct{}))) }()
	waitFor(t, "the holder to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
	var filled sync.Mutex
	local := ""
	lookup := func(context.Context) ([]byte, bool, error) {
		filled.Lock()
		defer filled.Unlock()
		return []byte(local), local != "", nil
	}
	res := make(chan Result, 1)
	go func() {
		r, err := waiter.Do(context.Background(), "k", lookup, origin.load("x", 0, nil))
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		res <- r
	}()
	waitFor(t, "the waiter to wait", 10*time.Second, func() bool { return waiter.Stats().LockWaits == 1 })
	filled.Lock()
	local = "from-invalidation"
	filled.Unlock()
	waiter.Wake("k")
	select {
	case r := <-res:
		if string(r.Value) != "from-invalidation" {
			t.Errorf("waiter got %q, want from-invalidation", r.Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Wake did not wake the waiter")
	}
	holder.Close() // ends the blocked load
}

// TestRefreshOncePerValue: Refresh with the value a caller saw rebuilds
// once; a second Refresh with the same (now replaced) value does not, nor
// does one while the lease is held.
func TestRefreshOncePerValue(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		a, b := f.group(Options{}), f.group(Options{})
		if err := f.c.Do(context.Background(), f.c.B().Set().Key("k").Value("v1").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		var origin counter
		release := make(chan struct{})
		if !a.Refresh("k", []byte("v1"), origin.load("v2", time.Minute, release)) {
			t.Fatalf("a.Refresh = false, want true")
		}
		waitFor(t, "a's refresh to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
		// The lease is held: b's refresh starts locally but skips.
		if !b.Refresh("k", []byte("v1"), origin.load("v2b", time.Minute, nil)) {
			t.Fatalf("b.Refresh = false, want true (started, then skipped)")
		}
		waitFor(t, "b's refresh to skip", 10*time.Second, func() bool { return b.Stats().RefreshesSkipped == 1 })
		close(release)
		waitFor(t, "the new value", 10*time.Second, func() bool { v, _ := redisGet(t, f.c, "k"); return v == "v2" })
		// b saw v1, which is gone: no second rebuild.
		b.Refresh("k", []byte("v1"), origin.load("v3", time.Minute, nil))
		waitFor(t, "b's second refresh to skip", 10*time.Second, func() bool { return b.Stats().RefreshesSkipped == 2 })
		if got := origin.calls.Load(); got != 1 {
			t.Errorf("origin calls = %d, want 1", got)
		}
		// Do finds the refreshed value in Redis without loading.
		r, err := b.Do(context.Background(), "k", nil, origin.load("v4", time.Minute, nil))
		if err != nil || string(r.Value) != "v2" || r.Loaded {
			t.Errorf("Do after refresh = %+v, %v; want v2 from Redis", r, err)
		}
	})
}

// TestPanicReleasesLock: a panic in the holder releases the lease.
func TestPanicReleasesLock(t *testing.T) {
	f := newFleet(t, variants[0])
	g := f.group(Options{LeaseTTL: 30 * time.Second})
	_, err := g.Do(context.Background(), "k", nil, func(context.Context) ([]byte, time.Duration, error) { panic("x") })
	if !errors.Is(err, ErrPanic) {
		t.Fatalf("error = %v, want ErrPanic", err)
	}
	if _, held := redisGet(t, f.c, g.keysFor("k").lock); held {
		t.Errorf("lock still held after a panic")
	}
	if _, ok := redisGet(t, f.c, "k"); ok {
		t.Errorf("a value was stored after a panic")
	}
}

// TestRenewerKeepsEveryLease: one Group's renewer keeps several leases
// alive at once, taken at different times and held for many leases each,
// and keeps renewing after it went idle: every key is loaded once, by the
// holder, and the other process never takes a lease.
func TestRenewerKeepsEveryLease(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		const lease = 400 * time.Millisecond
		holder := f.group(Options{LeaseTTL: lease})
		waiter := f.group(Options{LeaseTTL: lease, WaitTimeout: lease / 2})
		var origin counter
		run := func(keys []string) {
			release := make(chan struct{})
			load := origin.load("v", time.Minute, release)
			errs := make(chan error, 2*len(keys))
			for i, key := range keys {
				renewals := holder.Stats().LockRenewals
				go func() {
					_, err := holder.Do(context.Background(), key, nil, load)
					errs <- err
				}()
				waitFor(t, "the holder to load "+key, 10*time.Second, func() bool { return origin.calls.Load() >= int64(i+1) })
				// Stagger the leases: the next one is taken after a renewal.
				waitFor(t, "a renewal", 10*time.Second, func() bool { return holder.Stats().LockRenewals > renewals })
			}
			base := origin.calls.Load()
			for _, key := range keys {
				go func() {
					r, err := waiter.Do(context.Background(), key, nil, load)
					if err == nil && (string(r.Value) != "v" || r.Loaded) {
						err = fmt.Errorf("waiter for %s = %+v; want v from the holder", key, r)
					}
					errs <- err
				}()
			}
			// Every lease outlives several leases before the loads end.
			renewals := holder.Stats().LockRenewals
			waitFor(t, "more renewals", 20*time.Second, func() bool {
				return holder.Stats().LockRenewals >= renewals+uint64(3*len(keys))
			})
			close(release)
			for range 2 * len(keys) {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			if got := origin.calls.Load(); got != base {
				t.Errorf("origin calls = %d after the waiters, want %d", got, base)
			}
		}
		run([]string{"a", "b", "c"})
		run([]string{"d"}) // after the renewer went idle
		if got := origin.calls.Load(); got != 4 {
			t.Errorf("origin calls = %d, want 4", got)
		}
		hs, ws := holder.Stats(), waiter.Stats()
		if hs.LockLosses != 0 || ws.LockAcquired != 0 {
			t.Errorf("holder losses=%d, waiter acquisitions=%d; want 0, 0", hs.LockLosses, ws.LockAcquired)
		}
	})
}
