package tracking

import (
	"math"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/puzpuzpuz/xsync/v4"
)

// policy is one shard's eviction order. It counts nothing: the shard does
// the byte accounting. Not safe for concurrent use; the shard's lock guards it.
type policy interface {
	// get returns key's entry and records the access.
	get(key string) (*entry, bool)
	// peek returns key's entry without recording an access.
	peek(key string) (*entry, bool)
	// add inserts key, which must not be present.
	add(key string, e *entry)
	// remove deletes key if present.
	remove(key string) (*entry, bool)
	// removeOldest deletes and returns the entry the policy evicts first.
	removeOldest() (string, *entry, bool)
	// each calls fn for every entry until fn returns false.
	each(fn func(key string, e *entry) bool)
	len() int
	purge()
}

func newPolicy(p Policy, shareBytes int64, idx *xsync.Map[string, *entry]) policy {
	if p == PolicyTwoQueue {
		return newTwoQueue(shareBytes)
	}
	return &lruPolicy{l: newSimpleLRU[*entry](), idx: idx}
}

// newSimpleLRU returns a simplelru that never evicts by count: the shard
// evicts by bytes.
func newSimpleLRU[V any]() *simplelru.LRU[string, V] {
	l, err := simplelru.NewLRU[string, V](math.MaxInt, nil)
	if err != nil { // only for a size <= 0
		panic(err)
	}
	return l
}

// lruPolicy is golang-lru's simplelru, mirrored in a concurrent map (idx)
// that hits read without the shard lock.
//
// Hits therefore do not move entries to the front: each one sets its
// entry's used bit instead (a write only on the first hit since the last
// check), and eviction gives a used entry a second chance — the oldest
// entry, if read since it was last looked at, goes back to the front with
// its bit cleared (CLOCK-style LRU approximation, as in many concurrent
// caches). A hit that moved the entry under the lock would write the
// shard's cache line on every read, and two cores reading different keys
// of the same shard would pass that line back and forth.
type lruPolicy struct {
	l   *simplelru.LRU[string, *entry]
	idx *xsync.Map[string, *entry]
}

func (p *lruPolicy) get(key string) (*entry, bool)  { return p.l.Get(key) }
func (p *lruPolicy) peek(key string) (*entry, bool) { return p.l.Peek(key) }
func (p *lruPolicy) add(key string, e *entry) {
	p.l.Add(key, e)
	p.idx.Store(key, e)
}

// removeOldest evicts the least recently used entry, counting a hit since
// its last check as a use: such an entry moves to the front, its bit
// cleared, at most once per entry per call.
func (p *lruPolicy) removeOldest() (string, *entry, bool) {
	for range p.l.Len() {
		k, e, ok := p.l.GetOldest()
		if !ok || e.used.Load() == 0 {
			break
		}
		e.used.Store(0)
		p.l.Get(k) // to the front
	}
	k, e, ok := p.l.RemoveOldest()
	if ok {
		p.idx.Delete(k)
	}
	return k, e, ok
}

func (p *lruPolicy) purge() {
	p.l.Purge()
	p.idx.Clear()
}

func (p *lruPolicy) len() int { return p.l.Len() }

func (p *lruPolicy) remove(key string) (*entry, bool) {
	e, ok := p.l.Peek(key)
	if ok {
		p.l.Remove(key)
		p.idx.Delete(key)
	}
	return e, ok
}

func (p *lruPolicy) each(fn func(string, *entry) bool) {
	for _, k := range p.l.Keys() {
		if e, ok := p.l.Peek(k); ok && !fn(k, e) {
			return
		}
	}
}

// twoQueue is golang-lru's 2Q (TwoQueueCache) with its queues sized in bytes:
// entries seen once live in recent, entries seen again move to frequent, and
// keys evicted from recent are remembered in ghost so that a quick return
// goes straight to frequent. Eviction takes from recent while it holds more
// than its target share of bytes, else from frequent.
type twoQueue struct {
	recent, frequent *simplelru.LRU[string, *entry]
	ghost            *simplelru.LRU[string, struct{}]
	recentBytes      int64
	recentTarget     int64
}

// twoQueueRecentRatio and twoQueueGhostEntries follow golang-lru's
// Default2QRecentRatio; the ghost list is bounded by count (its keys are not
// charged to the budget), so it is kept small.
const (
	twoQueueRecentRatio  = 0.25
	twoQueueGhostEntries = 1024
)

func newTwoQueue(shareBytes int64) *twoQueue {
	ghost, err := simplelru.NewLRU[string, struct{}](twoQueueGhostEntries, nil)
	if err != nil {
		panic(err)
	}
	return &twoQueue{
		recent:       newSimpleLRU[*entry](),
		frequent:     newSimpleLRU[*entry](),
		ghost:        ghost,
		recentTarget: int64(float64(shareBytes) * twoQueueRecentRatio),
	}
}

func (q *twoQueue) get(key string) (*entry, bool) {
	if e, ok := q.frequent.Get(key); ok {
		return e, true
	}
	if e, ok := q.recent.Peek(key); ok {
		q.recent.Remove(key)
		q.recentBytes -= e.size
		q.frequent.Add(key, e)
		return e, true
	}
	return nil, false
}

func (q *twoQueue) peek(key string) (*entry, bool) {
	if e, ok := q.frequent.Peek(key); ok {
		return e, true
	}
	return q.recent.Peek(key)
}

func (q *twoQueue) add(key string, e *entry) {
	if q.ghost.Remove(key) {
		q.frequent.Add(key, e)
		return
	}
	q.recent.Add(key, e)
	q.recentBytes += e.size
}

func (q *twoQueue) remove(key string) (*entry, bool) {
	if e, ok := q.frequent.Peek(key); ok {
		q.frequent.Remove(key)
		return e, true
	}
	if e, ok := q.recent.Peek(key); ok {
		q.recent.Remove(key)
		q.recentBytes -= e.size
		return e, true
	}
	return nil, false
}

func (q *twoQueue) removeOldest() (string, *entry, bool) {
	if q.recent.Len() > 0 && (q.recentBytes > q.recentTarget || q.frequent.Len() == 0) {
		k, e, _ := q.recent.RemoveOldest()
		q.recentBytes -= e.size
		q.ghost.Add(k, struct{}{})
		return k, e, true
	}
	return q.frequent.RemoveOldest()
}

func (q *twoQueue) each(fn func(string, *entry) bool) {
	for _, l := range []*simplelru.LRU[string, *entry]{q.recent, q.frequent} {
		for _, k := range l.Keys() {
			if e, ok := l.Peek(k); ok && !fn(k, e) {
				return
			}
		}
	}
}

func (q *twoQueue) len() int { return q.recent.Len() + q.frequent.Len() }

func (q *twoQueue) purge() {
	q.recent.Purge()
	q.frequent.Purge()
	q.ghost.Purge()
	q.recentBytes = 0
}
