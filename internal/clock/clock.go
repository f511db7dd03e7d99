// Package clock provides the time sources thermos uses: the wall clock, a
// coarse clock cheap enough for the memory tier's hit path, and a manual clock
// for deterministic tests.
package clock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock tells the time. Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// Wall is the system clock.
type Wall struct{}

// Now returns time.Now().
func (Wall) Now() time.Time { return time.Now() }

// DefaultResolution is how often a Coarse clock advances when none is given.
const DefaultResolution = time.Millisecond

// Coarse is a clock read from an atomic that an owned goroutine refreshes
// every resolution. time.Now costs about as much as an LRU hit; a Coarse read
// is a single atomic load. It may lag the wall clock by up to one resolution.
//
// Close stops its goroutine; Now keeps returning the last value afterwards.
type Coarse struct {
	nanos atomic.Int64
	// base and mono let Behind measure on the monotonic clock, which a
	// wall clock step cannot fool: mono is the last tick's offset from base.
	base      time.Time
	mono      atomic.Int64
	res       time.Duration
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewCoarse starts a coarse clock. A resolution <= 0 means DefaultResolution.
func NewCoarse(resolution time.Duration) *Coarse {
	if resolution <= 0 {
		resolution = DefaultResolution
	}
	c := &Coarse{stop: make(chan struct{}), done: make(chan struct{}), base: time.Now(), res: resolution}
	c.nanos.Store(c.base.UnixNano())
	go c.run()
	return c
}

func (c *Coarse) run() {
	defer close(c.done)
	t := time.NewTicker(c.res)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.nanos.Store(now.UnixNano())
			c.mono.Store(int64(now.Sub(c.base)))
		}
	}
}

// Now returns the time of the last tick.
func (c *Coarse) Now() time.Time { return time.Unix(0, c.nanos.Load()) }

// UnixNano returns the time of the last tick in nanoseconds since the epoch.
func (c *Coarse) UnixNano() int64 { return c.nanos.Load() }

// Resolution is how often c advances.
func (c *Coarse) Resolution() time.Duration { return c.res }

// Behind returns how far the last tick is behind the monotonic clock now:
// about a resolution at most while the ticking goroutine gets a processor
// when its timer fires, more while every processor is kept busy (or the
// process is not running). It reads the system clock: a Coarse read it is
// not.
func (c *Coarse) Behind() time.Duration { return time.Since(c.base) - time.Duration(c.mono.Load()) }

// Close stops the ticking goroutine and waits for it. It is safe to call twice.
func (c *Coarse) Close() {
	c.closeOnce.Do(func() { close(c.stop) })
	<-c.done
}

// Manual is a clock that moves only when told to. The zero value reads the
// Unix epoch; use NewManual to start elsewhere.
type Manual struct {
	nanos atomic.Int64
}

// NewManual returns a manual clock reading t.
func NewManual(t time.Time) *Manual {
	m := &Manual{}
	m.nanos.Store(t.UnixNano())
	return m
}

// Now returns the clock's current reading.
func (m *Manual) Now() time.Time { return time.Unix(0, m.nanos.Load()) }

// Advance moves the clock forward by d (backwards if d is negative).
func (m *Manual) Advance(d time.Duration) { m.nanos.Add(int64(d)) }

// Set moves the clock to t.
func (m *Manual) Set(t time.Time) { m.nanos.Store(t.UnixNano()) }
