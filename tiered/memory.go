package tiered

import (
	"context"

	"github.com/thermoscache/thermos/tracking"
)

// memoryTier is the memory tier: package tracking's sharded LRU, kept
// consistent with Redis by BCAST invalidation. Its per-key generations are
// the one guard every tier's fills and writes present (see tier).
type memoryTier struct {
	mem *tracking.Cache
}

var _ tier = memoryTier{}

func (memoryTier) source() Source { return SourceMemory }

// get is the slow path's look at memory: the hit path (Cache.hit) has
// already counted this read, so get neither counts nor refreshes recency.
func (m memoryTier) get(_ context.Context, r *route, key string) (entry, bool, bool, error) {
	it, verified, ok := m.mem.Peek(key)
	if !ok {
		return entry{}, false, false, nil
	}
	return entry{it: *it}, verified || r.Tiers&Redis == 0, true, nil
}

func (m memoryTier) fill(r *route, key string, e entry, t tracking.Ticket) bool {
	if r.Tiers&Redis != 0 {
		return m.mem.Fill(t, key, e.local(), true)
	}
	return m.mem.FillLocal(t, key, e.local())
}

func (m memoryTier) confirm(_ *route, key string, e entry, t tracking.Ticket) bool {
	return m.mem.Revalidate(t, key, e.it.Version)
}
