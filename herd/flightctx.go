package herd

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// flightCtx is a flight's context: the first caller's values without its
// cancellation, ended by LoadTimeout, by Close or by the flight's end.
//
// Why not context.WithTimeoutCause(context.WithoutCancel(ctx), …): that
// costs five allocations per flight (both contexts, the timer, its
// closure, the channel). A flightCtx lives in its flight and costs its
// channel, and that only once arm says it is about to be used: a flight
// that its first caller ends in one acquire (Group.lead: the value is in
// Redis) never uses it, and costs nothing. Its deadline's timer comes
// from a pool (flightTimer).
type flightCtx struct {
	// values is the first caller's values, never cancelled, once armed.
	// Before that it is the caller's ctx itself (init), which must not be
	// handed on: context.Cause asks Value for ctx's own cancellation.
	values   context.Context
	deadline time.Time
	// done is made by arm (closed already if the context ended before).
	// It is written under mu by the goroutine that then uses the context,
	// and read without mu only by that goroutine.
	done   chan struct{}
	timers *sync.Pool   // of *flightTimer, the Group's
	timer  *flightTimer // ends the context at deadline; guarded by mu
	armed  bool         // guarded by mu

	mu struct {
		sync.Mutex
		why    error // set once, before done is closed
		afters []*afterFunc
	}
}

type afterFunc struct {
	fn   func()
	done bool // ran or stopped; guarded by flightCtx.mu
}

// flightTimer ends the flightCtx it is armed for at its deadline. A flight
// that ends first stops it and, when the stop prevented the call, gives it
// back to the pool for the next flight: arming then costs no timer and no
// closure.
type flightTimer struct {
	t *time.Timer
	c atomic.Pointer[flightCtx]
}

func (ft *flightTimer) fire() {
	if c := ft.c.Load(); c != nil {
		c.end(context.DeadlineExceeded)
	}
}

// init sets the deadline, timeout from now, and keeps ctx for its values;
// arm makes the context usable, with a timer from timers.
func (c *flightCtx) init(ctx context.Context, timeout time.Duration, timers *sync.Pool) {
	c.values, c.deadline, c.timers = ctx, time.Now().Add(timeout), timers
}

// arm makes the context ready to be used: Done's channel, the timer of
// its deadline, values without ctx's cancellation. Call it once, before
// the context is handed to anything, from the goroutine that will use it.
// A context that ended before (Close) is armed ended.
func (c *flightCtx) arm() {
	if _, dl := c.values.Deadline(); dl || c.values.Done() != nil {
		c.values = context.WithoutCancel(c.values)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = true
	c.done = make(chan struct{})
	if c.mu.why != nil {
		close(c.done)
		return
	}
	d := time.Until(c.deadline)
	if ft, _ := c.timers.Get().(*flightTimer); ft != nil {
		ft.c.Store(c)
		ft.t.Reset(d)
		c.timer = ft
		return
	}
	ft := &flightTimer{}
	ft.c.Store(c)
	ft.t = time.AfterFunc(d, ft.fire)
	c.timer = ft
}

func (c *flightCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *flightCtx) Done() <-chan struct{}       { return c.done }
func (c *flightCtx) Value(key any) any           { return c.values.Value(key) }

func (c *flightCtx) Err() error {
	if c.done != nil {
		select {
		case <-c.done:
		default:
			return nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.why
}

// timedOut reports whether the context ended by its deadline.
func (c *flightCtx) timedOut() bool { return c.Err() == context.DeadlineExceeded }

// end ends the context with why (context.DeadlineExceeded or
// context.Canceled) unless it already ended, and runs what AfterFunc
// registered, each in a goroutine of its own as package context does.
func (c *flightCtx) end(why error) {
	c.mu.Lock()
	if c.mu.why != nil {
		c.mu.Unlock()
		return
	}
	c.mu.why = why
	if !c.armed {
		// Never used: nothing waits on it, nothing to stop (arm, if it
		// comes, makes it ended).
		c.mu.Unlock()
		return
	}
	close(c.done)
	// Stop reports false when the timer has fired (why is then, or is
	// about to be, its DeadlineExceeded): its call may still be running,
	// so it is not reused.
	if why != context.DeadlineExceeded && c.timer.t.Stop() {
		c.timer.c.Store(nil)
		c.timers.Put(c.timer)
	}
	c.timer = nil
	afters := c.mu.afters
	c.mu.afters = nil
	for _, a := range afters {
		if !a.done {
			a.done = true
			go a.fn()
		}
	}
	c.mu.Unlock()
}

// AfterFunc is what package context looks for to tie a derived context
// (context.WithTimeout of a loader's ctx) to this one without starting a
// goroutine per derived context.
func (c *flightCtx) AfterFunc(fn func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.why != nil {
		go fn()
		return func() bool { return false }
	}
	a := &afterFunc{fn: fn}
	c.mu.afters = append(c.mu.afters, a)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.done {
			return false
		}
		a.done = true
		return true
	}
}
