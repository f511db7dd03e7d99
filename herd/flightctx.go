package herd

import (
	"context"
	"sync"
	"time"
)

// flightCtx is a flight's context: the first caller's values without its
// cancellation, ended by LoadTimeout, by Close or by the flight's end.
//
// Why not context.WithTimeoutCause(context.WithoutCancel(ctx), …): that
// costs five allocations per flight (both contexts, the timer, its
// closure, the channel). A flightCtx lives in its flight and costs its
// channel, its timer and the timer's function.
type flightCtx struct {
	values   context.Context // the first caller's values; never cancelled
	deadline time.Time
	done     chan struct{}
	timer    *time.Timer // ends the context at deadline

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

func (c *flightCtx) init(values context.Context, timeout time.Duration) {
	c.values, c.deadline, c.done = values, time.Now().Add(timeout), make(chan struct{})
	c.timer = time.AfterFunc(timeout, c.timeout)
}

func (c *flightCtx) timeout() { c.end(context.DeadlineExceeded) }

func (c *flightCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *flightCtx) Done() <-chan struct{}       { return c.done }
func (c *flightCtx) Value(key any) any           { return c.values.Value(key) }

func (c *flightCtx) Err() error {
	select {
	case <-c.done:
	default:
		return nil
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
	close(c.done)
	if why != context.DeadlineExceeded {
		c.timer.Stop()
	}
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
