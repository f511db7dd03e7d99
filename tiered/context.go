package tiered

import (
	"context"
	"sync"
	"sync/atomic"
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
	bypass  Bypass
	sources *Sources
}

// ctlOf returns ctx's controls, nil if it carries none. It asks ctx.Value
// without first comparing ctx with context.Background(): that comparison
// (runtime.ifaceeq) cost more than Background's Value call it saved, and
// came on top of the walk for every other context.
//
// Until a context with controls has been made (ctlMade), none can carry
// any, and ctlOf skips ctx.Value, which walks the whole chain of a
// request's context (an interface call per level) to find nothing.
func ctlOf(ctx context.Context) *ctl {
	if !ctlMade.Load() {
		return nil
	}
	c, _ := ctx.Value(ctlKey{}).(*ctl)
	return c
}

// ctlMade is set once any context with controls has been made. Whoever
// holds such a context got it after the store, so sees it set.
var ctlMade atomic.Bool

// noControls is ctlOf(ctx) == nil, small enough to inline into the hit
// paths.
func noControls(ctx context.Context) bool {
	return !ctlMade.Load() || ctx.Value(ctlKey{}) == nil
}

// withCtl returns ctx carrying n.
func withCtl(ctx context.Context, n *ctl) context.Context {
	if !ctlMade.Load() {
		ctlMade.Store(true)
	}
	return context.WithValue(ctx, ctlKey{}, n)
}

// WithBypass returns a context under which the cache bypasses what b says.
//
// Until a program first calls WithBypass or WithSources, reads do not look
// for such controls in their context; from then on every read asks its
// context for them (ctx.Value: a step per layer of the context, a few
// nanoseconds for a request's context).
func WithBypass(ctx context.Context, b Bypass) context.Context {
	n := ctl{bypass: b}
	if old := ctlOf(ctx); old != nil {
		n.sources = old.sources
	}
	return withCtl(ctx, &n)
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

// Sources records which tier answered each key read under a context made by
// WithSources, for response headers and debugging: after the call, Source
// tells whether a key came from memory, disk, Redis, the loader or a stale
// copy. The zero value is ready to use; it is safe for concurrent use.
type Sources struct {
	mu      sync.Mutex
	sources map[string]Source
}

// WithSources returns a context under which every key read (Get,
// GetOrLoad, GetMany, and Typed's) records in s the tier that answered it.
// Like WithBypass, it makes every later read ask its context for controls.
func WithSources(ctx context.Context, s *Sources) context.Context {
	n := ctl{sources: s}
	if old := ctlOf(ctx); old != nil {
		n.bypass = old.bypass
	}
	return withCtl(ctx, &n)
}

// Source returns the tier that last answered key, and whether key was read.
func (s *Sources) Source(key string) (Source, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, ok := s.sources[key]
	return src, ok
}

// All returns a copy of every key's source.
func (s *Sources) All() map[string]Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]Source, len(s.sources))
	for k, v := range s.sources {
		m[k] = v
	}
	return m
}

func (s *Sources) record(key string, src Source) {
	s.mu.Lock()
	if s.sources == nil {
		s.sources = make(map[string]Source)
	}
	s.sources[key] = src
	s.mu.Unlock()
}

// note records the source of a read when ctx carries Sources.
func note(ctx context.Context, key string, s Source) { ctlOf(ctx).note(key, s) }

// note is note for a caller that already has ctx's controls (c may be nil).
func (c *ctl) note(key string, s Source) {
	if c != nil && c.sources != nil {
		c.sources.record(key, s)
	}
}
