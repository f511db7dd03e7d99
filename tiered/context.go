package tiered

import (
	"context"
	"sync"
)

// Bypass turns the cache off for one request's reads, writes or both
// (cashews' "disabling"): reads that bypass go straight to the loader (or
// miss, for Get); writes that bypass store nothing.
type Bypass uint8

// What a request can bypass.
const (
	BypassReads Bypass = 1 << iota
	BypassWrites
	BypassAll = BypassReads | BypassWrites
)

// ctlKey carries a request's controls: one context value, so the hit path
// pays for one lookup.
type ctlKey struct{}

type ctl struct {
	bypass   Bypass
	detector *Detector
}

func ctlOf(ctx context.Context) *ctl {
	if ctx == context.Background() {
		return nil // the common no-controls case skips the Value walk
	}
	c, _ := ctx.Value(ctlKey{}).(*ctl)
	return c
}

// WithBypass returns a context under which the cache bypasses what b says.
func WithBypass(ctx context.Context, b Bypass) context.Context {
	n := ctl{bypass: b}
	if old := ctlOf(ctx); old != nil {
		n.detector = old.detector
	}
	return context.WithValue(ctx, ctlKey{}, &n)
}

func bypassOf(ctx context.Context) Bypass {
	if c := ctlOf(ctx); c != nil {
		return c.bypass
	}
	return 0
}

// Source names the tier that answered a read.
type Source uint8

// Where a read was answered.
const (
	SourceNone   Source = iota // a miss
	SourceMemory               // the memory tier
	SourceDisk                 // the disk tier
	SourceRedis                // Redis
	SourceLoader               // the loader, possibly in another goroutine or process
	SourceStale                // a stale value served because the loader failed
)

func (s Source) String() string {
	switch s {
	case SourceMemory:
		return "memory"
	case SourceDisk:
		return "disk"
	case SourceRedis:
		return "redis"
	case SourceLoader:
		return "loader"
	case SourceStale:
		return "stale"
	default:
		return "miss"
	}
}

// Detector records which tier answered each key read under a context made
// by WithDetector, for response headers and debugging. It is safe for
// concurrent use.
type Detector struct {
	mu      sync.Mutex
	sources map[string]Source
}

// WithDetector returns a context whose reads are recorded in d.
func WithDetector(ctx context.Context, d *Detector) context.Context {
	n := ctl{detector: d}
	if old := ctlOf(ctx); old != nil {
		n.bypass = old.bypass
	}
	return context.WithValue(ctx, ctlKey{}, &n)
}

// Source returns the tier that last answered key, and whether key was read.
func (d *Detector) Source(key string) (Source, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sources[key]
	return s, ok
}

// All returns a copy of every key's source.
func (d *Detector) All() map[string]Source {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]Source, len(d.sources))
	for k, v := range d.sources {
		m[k] = v
	}
	return m
}

func (d *Detector) record(key string, s Source) {
	d.mu.Lock()
	if d.sources == nil {
		d.sources = make(map[string]Source)
	}
	d.sources[key] = s
	d.mu.Unlock()
}

// note records the source of a read when ctx carries a Detector.
func note(ctx context.Context, key string, s Source) {
	if c := ctlOf(ctx); c != nil && c.detector != nil {
		c.detector.record(key, s)
	}
}
