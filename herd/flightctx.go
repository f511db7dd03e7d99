package herd

import (
	"context"
	"sync"
	"time"
)

// flightCtx is a flight's context: the first caller's values without its
// cancellation, ended by LoadTimeout, by Close or by the flight's end.
//
// Why not context.WithTimeout: that costs four allocations (the context,
// its runtime timer, its channel, WithoutCancel's wrapper) and a timer
// added to and removed from the runtime's heap per flight, a good part of
// a cold load's client CPU. A flightCtx lives in its flight and costs one
// channel; every flight's deadline is its start plus LoadTimeout, so the
// Group keeps its flights in start order and one goroutine (reapLoop)
// times them all, waking about once per LoadTimeout while flights keep
// coming.
type flightCtx struct {
	values   context.Context // the first caller's values; never cancelled
	deadline time.Time
	done     chan struct{}

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

func (c *flightCtx) init(values context.Context, deadline time.Time) {
	c.values, c.deadline, c.done = values, deadline, make(chan struct{})
}

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

// reaper is the list of running flights, earliest deadline first, and the
// state of the goroutine that ends them at their deadline. Guarded by
// Group.mu.
type reaper struct {
	head, tail *flight
	running    bool      // reapLoop was started
	wake       time.Time // when reapLoop wakes next; zero: idle until kicked
	kick       chan struct{}
}

// linkLocked appends f, whose deadline is the latest yet, and makes sure
// reapLoop will wake by it. REQUIRES: g.mu held.
func (g *Group) linkLocked(f *flight) {
	r := &g.reap
	f.prev, f.next = r.tail, nil
	if r.tail != nil {
		r.tail.next = f
	} else {
		r.head = f
	}
	r.tail = f
	f.linked = true
	if !r.running {
		r.running = true
		g.wg.Add(1)
		go g.reapLoop()
	}
	if r.wake.IsZero() || f.ctx.deadline.Before(r.wake) {
		r.wake = f.ctx.deadline // reapLoop sets it again when it runs
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// unlinkLocked removes f from the list if it is there. REQUIRES: g.mu held.
func (g *Group) unlinkLocked(f *flight) {
	if !f.linked {
		return
	}
	r := &g.reap
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		r.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		r.tail = f.prev
	}
	f.prev, f.next, f.linked = nil, nil, false
}

// reapLoop ends each flight's context at its deadline; it ends on Close.
func (g *Group) reapLoop() {
	defer g.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	var due []*flight
	for {
		due = due[:0]
		g.mu.Lock()
		now := time.Now()
		for f := g.reap.head; f != nil && !f.ctx.deadline.After(now); f = f.next {
			due = append(due, f)
		}
		for _, f := range due {
			g.unlinkLocked(f)
		}
		var next time.Time
		if g.reap.head != nil {
			next = g.reap.head.ctx.deadline
		}
		g.reap.wake = next
		g.mu.Unlock()
		for i, f := range due {
			f.ctx.end(context.DeadlineExceeded)
			due[i] = nil
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			t.Reset(time.Until(next))
			tc = t.C
		}
		select {
		case <-tc:
		case <-g.reap.kick:
		case <-g.ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}
