package herd

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// LookupFunc looks for the value in the caller's cache. It returns ok ==
// false on a miss; an error ends the flight with that error. The returned
// slice is handed to every waiter of the flight.
type LookupFunc func(ctx context.Context) (value []byte, ok bool, err error)

// LoadFunc rebuilds the value from the origin. value is what Do returns and,
// on a Group with a Client, the bytes stored in Redis under the data key for
// ttl (zero means no expiry; negative is an error, ErrNegativeTTL). ctx is
// the flight's own context, bounded by LoadTimeout and cancelled by Close,
// not any caller's.
type LoadFunc func(ctx context.Context) (value []byte, ttl time.Duration, err error)

// Result is what Do returns with the value.
type Result struct {
	// Value is the value found or loaded. It is shared by every waiter of
	// the flight: do not modify it.
	Value []byte
	// Loaded reports that this process's flight ran load to produce Value
	// (true for every caller sharing that flight). False means Value was
	// found by lookup or in Redis, or written there by another process.
	Loaded bool
	// Shared reports that this call joined a flight another call started.
	Shared bool
	// Stored reports that Value was written to Redis by this flight's fenced
	// write. A loaded value is not stored when the Group has no Client or
	// when the lease was lost (a newer value may be there).
	Stored bool
	// Duration is how long load ran, XFetch's delta; zero if not Loaded.
	Duration time.Duration
	// TTL is, for a Value found in Redis, the data key's remaining TTL
	// read in the same step (negative: no expiry); zero otherwise.
	TTL time.Duration
	// WriteErr is the error of a fenced write that failed (Redis could not
	// answer or refused): Value was loaded but is not in Redis, and the
	// lease expires on its own. Nil when the write succeeded or was
	// refused because the lease was lost.
	WriteErr error
}

// Group runs at most one rebuild per key at a time: across the goroutines of
// this process by single-flight and, with a Client, across processes by a
// Redis lease. A Group is safe for concurrent use; Close stops it.
type Group struct {
	o       Options
	client  rueidis.Client
	scripts scripts
	notify  notifier
	leaseMS string // LeaseTTL in milliseconds, a script argument

	// noScripts is set once the server refused a script, or by
	// Options.DisableScripting.
	noScripts atomic.Bool
	// noPublish is set once the server refused a PUBLISH on the
	// notification channels (an ACL user without channel rights), or by
	// Options.DisableNotifications; noSubscribe likewise for SUBSCRIBE.
	noPublish, noSubscribe atomic.Bool

	// ctx is cancelled by Close, and so is every flight's context.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts flights, the renewer and the notifier's watcher.
	wg        sync.WaitGroup
	closeOnce sync.Once

	randMu sync.Mutex // guards o.Rand
	timers sync.Pool  // of *flightTimer: see flightCtx

	// closed is set by Close before it collects the flights; Do and
	// Refresh check it under their key's shard lock, so a flight is either
	// registered before Close looks at its shard or never.
	closed atomic.Bool
	// shards hold the flights by key, each map under a lock of its own:
	// every flight locks its key's twice (start and finish), and one lock
	// for all keys was the Group's most contended under many concurrent
	// misses (BenchmarkDoContention).
	shards [flightShards]flightShard
	seed   maphash.Seed

	stats counters
	ren   renewer

	// renewHook, when set by a test, runs as a holder's lease is handed to
	// the renewer; false keeps that lease from being renewed, simulating a
	// holder paused past its lease.
	renewHook func() bool
	// beforeWait, when set by a test, runs when a flight is about to sleep
	// waiting for another holder, subscribed and having looked again.
	beforeWait func(key string)
	// leadLost, when set by a test, runs after lead's acquire; true drops
	// its answer as if the caller's ctx had ended while it was on its way.
	leadLost func() bool
}

// flightShards is the number of flight maps: enough that goroutines on
// different cores rarely meet on one.
const flightShards = 64

// flightShard is one flight map and its lock, a cache line to itself.
type flightShard struct {
	mu      sync.Mutex
	flights map[string]*flight
	_       [48]byte
}

// shardOf returns key's flight shard.
func (g *Group) shardOf(key string) *flightShard {
	return &g.shards[maphash.String(g.seed, key)%flightShards]
}

// flight is one rebuild attempt for one key in this process.
type flight struct {
	key string
	sh  *flightShard // where it is registered
	// done is closed when res and err are final. It is made by the first
	// caller that waits for the flight, under its shard's lock: a flight run by
	// its only caller on that caller's goroutine needs none.
	done chan struct{}
	// wake gets Wake's signals (capacity 1). The flight makes it, under
	// its shard's lock, when it first finds the lease held by another: it is
	// only waited on after that.
	wake chan struct{}
	res  Result
	err  error
	// retry tells waiters that joined a Refresh flight that did not load
	// (the lease was held or the value already replaced) to start over.
	retry bool
	lease lease // while the flight holds the lease and loads
	// ctx is the flight's context, armed by whoever runs the flight;
	// ctx.values, the first caller's values without cancellation, serves
	// work that must outlive it.
	ctx flightCtx
}

// New returns a Group. opts may be nil (a local-only Group).
func New(opts *Options) (*Group, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("herd: new: %w", err)
	}
	g := &Group{o: o, client: o.Client, scripts: newScripts(), leaseMS: ms(o.LeaseTTL)}
	g.noScripts.Store(o.DisableScripting)
	g.noPublish.Store(o.DisableNotifications)
	g.noSubscribe.Store(o.DisableNotifications)
	g.notify.g = g
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.seed = maphash.MakeSeed()
	for i := range g.shards {
		g.shards[i].flights = make(map[string]*flight)
	}
	g.ren.leases = make(map[*lease]struct{})
	return g, nil
}

// Close cancels every flight, waits for every goroutine of the Group to end
// and closes the notification connection. Callers waiting in Do get
// ErrClosed. A lease held by a cancelled flight is released. It is safe to
// call twice and always returns nil.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		var flights []*flight
		for i := range g.shards {
			sh := &g.shards[i]
			sh.mu.Lock()
			for _, f := range sh.flights {
				flights = append(flights, f)
			}
			sh.mu.Unlock()
		}
		g.cancel()
		for _, f := range flights {
			f.ctx.end(context.Canceled)
		}
		g.wg.Wait()
		if g.client != nil {
			g.notify.close()
		}
	})
	return nil
}

// Do returns the value for key, rebuilding it with load at most once at a
// time per key across the goroutines of this process and, with a Client,
// across every process sharing the Redis.
//
// The first caller for key starts a flight; later callers share it. The
// flight runs on its own context (the first caller's values, not its
// cancellation, bounded by LoadTimeout): a caller whose ctx ends gets
// ctx.Err() at once and the flight goes on for the others. Inside the
// flight, lookup (nil means none) is asked again first; then, with a Client,
// one script either returns the data key's value from Redis or takes the
// lease. The lease holder runs load, renewing the lease while it runs, and
// stores the value with a fenced write that also wakes the waiters in other
// processes; those waiters read the value from Redis. Without a Client the
// flight just runs load.
//
// An error or panic from load reaches every waiter of the flight and nothing
// is stored; a panic comes back as an error wrapping ErrPanic. After Close,
// Do returns ErrClosed.
func (g *Group) Do(ctx context.Context, key string, lookup LookupFunc, load LoadFunc) (Result, error) {
	if key == "" {
		return Result{}, ErrEmptyKey
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	sh := g.shardOf(key)
	for {
		sh.mu.Lock()
		if g.closed.Load() {
			sh.mu.Unlock()
			return Result{}, ErrClosed
		}
		f, shared := sh.flights[key]
		if !shared {
			f = g.startLocked(sh, key, ctx)
			if ctx.Done() == nil {
				// ctx never ends, so this caller never returns before
				// the flight does: run it here, without a goroutine
				// and the two handoffs it costs.
				sh.mu.Unlock()
				g.runDo(f, lookup, load)
				return f.res, f.err
			}
			if g.client != nil && lookup == nil {
				// No done channel yet: lead makes one only if the
				// flight goes on without it (a caller joining meanwhile
				// makes it below).
				sh.mu.Unlock()
				if res, err, ended := g.lead(ctx, f, load); ended {
					return res, err
				}
				sh.mu.Lock()
			} else {
				f.done = make(chan struct{})
				go g.runDo(f, lookup, load)
			}
		} else if f.done == nil {
			f.done = make(chan struct{})
		}
		done := f.done
		sh.mu.Unlock()
		if shared {
			g.stats.sharedWaits.Add(1)
		}
		select {
		case <-done:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
		if f.retry {
			continue
		}
		res := f.res
		res.Shared = shared
		return res, f.err
	}
}

// Refresh starts a background rebuild of key unless one is already running
// in this process, and never blocks. It reports whether it started one. Use
// it when ShouldRefresh says a still-valid value should be
// refreshed early: callers that see false keep serving the value they have.
//
// current is the value the caller holds, as stored in Redis. With a Client
// the rebuild takes the lease only if the data key still holds exactly
// current (one script, compared on the server), so across processes one
// caller refreshes and callers that saw the old value after it was replaced
// do not refresh again. A nil current skips that check. Without a Client
// only the in-process check applies.
func (g *Group) Refresh(key string, current []byte, load LoadFunc) bool {
	if key == "" {
		return false
	}
	sh := g.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if g.closed.Load() {
		return false
	}
	if _, busy := sh.flights[key]; busy {
		g.stats.refreshSkipped.Add(1)
		return false
	}
	f := g.startLocked(sh, key, context.Background())
	go g.runRefresh(f, current, load)
	return true
}

// Wake wakes this process's flight for key if it is waiting for another
// process's rebuild, so it looks again at once: call it when an invalidation
// for key arrives (tiered's BCAST tracking). A no-op otherwise.
func (g *Group) Wake(key string) {
	sh := g.shardOf(key)
	sh.mu.Lock()
	var wake chan struct{}
	if f := sh.flights[key]; f != nil {
		wake = f.wake
	}
	sh.mu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// startLocked registers a new flight for key. Its context keeps ctx's
// values, drops its cancellation and deadline, is bounded by LoadTimeout
// and ends on Close; whoever runs the flight arms it first (flightCtx.arm).
// REQUIRES: sh (key's shard) locked, g not closed.
func (g *Group) startLocked(sh *flightShard, key string, ctx context.Context) *flight {
	f := &flight{key: key, sh: sh}
	f.ctx.init(ctx, g.o.LoadTimeout, &g.timers)
	sh.flights[key] = f
	g.wg.Add(1)
	g.stats.flights.Add(1)
	return f
}

// finish publishes the flight's outcome, forgets it, ends its context and
// its count in g.wg.
func (g *Group) finish(f *flight) {
	f.sh.mu.Lock()
	if f.sh.flights[f.key] == f {
		delete(f.sh.flights, f.key)
	}
	done := f.done
	f.sh.mu.Unlock()
	if done != nil {
		close(done)
	}
	f.ctx.end(context.Canceled)
	g.wg.Done()
}

// flightErr turns the end of f's context into ErrClosed or ErrTimeout.
func (g *Group) flightErr(f *flight, err error) error {
	if err == nil || f.ctx.Err() == nil {
		return err
	}
	if g.ctx.Err() != nil {
		return fmt.Errorf("herd: flight for %q cut short: %w", f.key, ErrClosed)
	}
	if f.ctx.timedOut() {
		return fmt.Errorf("%w: key %q after %v: %w", ErrTimeout, f.key, g.o.LoadTimeout, context.DeadlineExceeded)
	}
	return err
}

func (g *Group) runDo(f *flight, lookup LookupFunc, load LoadFunc) {
	defer g.finish(f)
	f.ctx.arm()
	ctx := &f.ctx
	if lookup != nil {
		v, ok, err := lookup(ctx)
		if err != nil {
			f.err = fmt.Errorf("herd: lookup %q: %w", f.key, err)
			return
		}
		if ok {
			g.stats.hits.Add(1)
			f.res = Result{Value: v}
			return
		}
	}
	if g.client == nil {
		r, err := g.load(ctx, f.key, load)
		f.res, f.err = r.Result, g.flightErr(f, err)
		return
	}
	f.res, f.err = g.shared(ctx, f, modeDo, nil, lookup, load)
	f.err = g.flightErr(f, f.err)
}

func (g *Group) runRefresh(f *flight, current []byte, load LoadFunc) {
	defer g.finish(f)
	f.ctx.arm()
	ctx := &f.ctx
	if g.client == nil {
		r, err := g.load(ctx, f.key, load)
		f.res, f.err = r.Result, g.flightErr(f, err)
		return
	}
	mode := modeRefresh
	if current == nil {
		mode = modeLock
	}
	f.res, f.err = g.shared(ctx, f, mode, current, nil, load)
	if errors.Is(f.err, errSkipped) {
		f.err, f.retry = nil, true
		g.stats.refreshSkipped.Add(1)
		return
	}
	f.err = g.flightErr(f, f.err)
	if f.err != nil {
		g.o.Logger.Warn("herd: refresh failed", "key", f.key, "err", f.err)
	}
}

// errSkipped ends a Refresh flight that found the lease held or the value
// replaced.
var errSkipped = errors.New("herd: refresh skipped")

// shared is a flight on a Group with a Client: find the value in Redis or
// take the lease, waiting for the holder when another has it.
func (g *Group) shared(ctx context.Context, f *flight, mode acquireMode, current []byte, lookup LookupFunc, load LoadFunc) (Result, error) {
	var tok [tokenBytes]byte
	g.token(&tok)
	k, token := g.flightKeys(f.key, tok[:])
	return g.sharedFrom(ctx, f, mode, current, lookup, load, k, token, step{})
}

// step is an acquire's answer that the caller already has: lead's, sent on
// the first caller's goroutine. A zero step has none (or lost it): the
// acquire is sent again, with the same token.
type step struct {
	known bool
	st    acquireState
	pttl  time.Duration
	// retried says the step was lost with the caller's ctx: the lease may
	// already be this token's (acquire then says so), and a value found
	// instead must release it.
	retried bool
}

// lead runs the first step of a Do flight on a Group with a Client on its
// first caller's goroutine, whose ctx can end: the acquire, which answers
// most flights (the value is in Redis) in one round trip and without the
// goroutine and two handoffs a flight of its own costs. It reports
// whether the flight ended there; if not (the lease to load under,
// another holder to wait for, or ctx ending while the acquire was on its
// way), the flight goes on in a goroutine of its own, as every flight did
// before, and the caller waits for it like any other. The acquire is sent
// with ctx, so the caller still returns when ctx ends.
func (g *Group) lead(ctx context.Context, f *flight, load LoadFunc) (Result, error, bool) {
	var tok [tokenBytes]byte
	g.token(&tok)
	k, token := g.flightKeys(f.key, tok[:])
	st, v, pttl, err := g.acquire(ctx, k, modeDo, token, nil)
	// Lost: ctx ended while the acquire was on its way, which may have
	// taken the lease for token.
	lost := err != nil && ctx.Err() != nil
	if g.leadLost != nil && g.leadLost() {
		lost = true
	}
	switch {
	case lost:
	case err != nil:
		f.err = g.flightErr(f, err)
		g.finish(f)
		return Result{}, f.err, true
	case st == stHit:
		g.stats.hits.Add(1)
		f.res = Result{Value: v, TTL: pttl}
		g.finish(f)
		return f.res, nil, true
	}
	first := step{known: !lost, st: st, pttl: pttl, retried: lost}
	f.sh.mu.Lock()
	if f.done == nil {
		f.done = make(chan struct{}) // the caller waits on it from now on
	}
	f.sh.mu.Unlock()
	f.ctx.arm() // here: the goroutine starts after it (go's happens-before)
	go func() {
		defer g.finish(f)
		f.res, f.err = g.sharedFrom(&f.ctx, f, modeDo, nil, nil, load, k, token, first)
		f.err = g.flightErr(f, f.err)
	}()
	return Result{}, nil, false
}

// sharedFrom is shared with the flight's names and token chosen, and the
// first acquire's answer when first has it.
func (g *Group) sharedFrom(ctx context.Context, f *flight, mode acquireMode, current []byte, lookup LookupFunc, load LoadFunc, k keys, token string, first step) (Result, error) {
	var sub *subscription
	defer func() {
		if sub != nil {
			sub.close()
		}
	}()
	waited, timedOut := false, false
	for {
		st, pttl := first.st, first.pttl
		var v []byte
		if !first.known {
			var err error
			if st, v, pttl, err = g.acquire(ctx, k, mode, token, current); err != nil {
				return Result{}, err
			}
		}
		retried := first.retried
		first = step{}
		switch st {
		case stHit:
			g.stats.hits.Add(1)
			if retried {
				// The lost acquire may have taken the lease before
				// the value arrived: give it back.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
				_, _ = g.release(rctx, k, token)
				cancel()
			}
			return Result{Value: v, TTL: pttl}, nil
		case stChanged:
			return Result{}, errSkipped
		case stAcquired:
			g.stats.lockAcquired.Add(1)
			if timedOut {
				g.stats.lockSteals.Add(1)
			}
			return g.hold(ctx, f, k, token, load)
		}
		// stHeld.
		if mode != modeDo {
			return Result{}, errSkipped
		}
		if f.wake == nil {
			f.sh.mu.Lock()
			f.wake = make(chan struct{}, 1)
			f.sh.mu.Unlock()
		}
		if !waited {
			g.stats.lockWaits.Add(1)
			waited = true
		}
		if sub == nil && !g.noSubscribe.Load() {
			// Subscribe, then look again: a value published between the
			// first look and the subscription would otherwise be missed.
			s, err := g.notify.subscribe(ctx, k.channel)
			if err != nil {
				if ctx.Err() != nil {
					return Result{}, ctx.Err()
				}
				if channelRefused(err) || commandRefused(err, "subscribe") {
					// Refused for good: stop asking, and say so once.
					if !g.noSubscribe.Swap(true) {
						g.o.Logger.Warn("herd: the redis user may not subscribe to the notification channels; "+
							"waiters will poll at WaitTimeout (grant +subscribe +unsubscribe &"+g.o.ChannelPrefix+"*)", "err", err)
					}
				} else {
					g.o.Logger.Warn("herd: cannot subscribe; waiting on timers", "key", f.key, "err", err)
				}
			} else {
				sub = s
				continue
			}
		}
		wait := g.o.WaitTimeout
		if pttl > 0 {
			// Look again right after the lease would run out: a dead holder
			// is replaced about one lease after its last renewal.
			wait = min(wait, pttl+time.Millisecond)
		}
		var subc chan struct{}
		if sub != nil {
			subc = sub.c
		}
		if g.beforeWait != nil {
			g.beforeWait(f.key)
		}
		t := time.NewTimer(wait)
		timedOut = false
		select {
		case <-subc:
			g.stats.wakeups.Add(1)
		case <-f.wake:
			g.stats.wakeups.Add(1)
		case <-t.C:
			timedOut = true
		case <-ctx.Done():
			t.Stop()
			return Result{}, ctx.Err()
		}
		t.Stop()
		if lookup != nil {
			v, ok, err := lookup(ctx)
			if err != nil {
				return Result{}, fmt.Errorf("herd: lookup %q: %w", f.key, err)
			}
			if ok {
				g.stats.hits.Add(1)
				return Result{Value: v}, nil
			}
		}
	}
}

// hold runs load under the lease k.lock/token, renewing it, then stores the
// value with a fenced write or releases the lease on error.
func (g *Group) hold(ctx context.Context, f *flight, k keys, token string, load LoadFunc) (Result, error) {
	f.lease.k, f.lease.token = k, token
	g.startRenewing(&f.lease)
	res, err := g.load(ctx, f.key, load)
	lost := g.stopRenewing(&f.lease)
	if err != nil {
		// Release with a context of its own: ctx may be the reason we stop.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if _, rerr := g.release(rctx, k, token); rerr != nil {
			g.o.Logger.Warn("herd: release failed; the lease will expire", "key", f.key, "err", rerr)
		}
		return Result{}, err
	}
	// The write (and AfterWrite) gets releaseTimeout even when the load
	// used up the flight's time; the flight's own context serves when it
	// has that much left (Close still ends it).
	wctx := ctx
	if dl, ok := ctx.Deadline(); !ok || ctx.Err() != nil || time.Until(dl) < releaseTimeout {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(f.ctx.values, releaseTimeout)
		defer cancel()
	}
	ok, werr := g.writeFenced(wctx, k, token, res.Value, res.ttl)
	if werr != nil {
		g.o.Logger.Warn("herd: fenced write failed", "key", f.key, "err", werr)
		res.WriteErr = werr
		return res.Result, nil
	}
	if !ok {
		g.stats.fencedRefused.Add(1)
		if !lost {
			g.stats.lockLosses.Add(1)
		}
		return res.Result, nil
	}
	g.stats.fencedWrites.Add(1)
	res.Stored = true
	if g.o.AfterWrite != nil {
		g.o.AfterWrite(wctx, f.key, res.Value)
	}
	return res.Result, nil
}

// releaseTimeout bounds the fenced write and the release after load.
const releaseTimeout = 5 * time.Second

type loaded struct {
	Result
	ttl time.Duration
}

// load runs fn, turning a panic into an error wrapping ErrPanic.
func (g *Group) load(ctx context.Context, key string, fn LoadFunc) (res loaded, err error) {
	g.stats.loads.Add(1)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			g.stats.panics.Add(1)
			err = &PanicError{Key: key, Value: r, Stack: debug.Stack()}
		}
		if err != nil {
			g.stats.loadErrors.Add(1)
			res = loaded{}
		}
	}()
	v, ttl, err := fn(ctx)
	if err != nil {
		return loaded{}, fmt.Errorf("herd: load %q: %w", key, err)
	}
	if ttl < 0 {
		return loaded{}, fmt.Errorf("%w: key %q: %v", ErrNegativeTTL, key, ttl)
	}
	return loaded{Result: Result{Value: v, Loaded: true, Duration: time.Since(start)}, ttl: ttl}, nil
}

// tokenBytes is a lock token's length before hex encoding.
const tokenBytes = 16

// token fills b with a fresh random lock token.
func (g *Group) token(b *[tokenBytes]byte) {
	g.randMu.Lock()
	for i := 0; i < len(b); i += 8 {
		var u uint64
		if g.o.Rand != nil {
			u = g.o.Rand.Uint64()
		} else {
			u = rand.Uint64()
		}
		for j := range 8 {
			b[i+j] = byte(u >> (8 * j))
		}
	}
	g.randMu.Unlock()
}
