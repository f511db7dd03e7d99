package tracking

import "github.com/hashicorp/golang-lru/v2/simplelru"

// policy is one shard's eviction order. It counts nothing: the shard does
// the byte accounting and the index. Not safe for concurrent use; the
// shard's lock guards it.
type policy interface {
	// add makes e, just inserted, resident; h is its key's hash. Any older
	// entry of the key was removed first.
	add(e *entry, h uint64)
	// replace puts e, just inserted, in the place of old, the resident
	// entry of the same key it overwrites; the write counts as an access.
	replace(old, e *entry, h uint64)
	// remove drops e, which is resident.
	remove(e *entry)
	// hit records a hit on e under the shard lock. Only called when
	// lockFree is false; lock-free policies read the access counts hits
	// leave in entries (entry.touch).
	hit(e *entry)
	// victim unlinks and returns the next entry to evict, or nil if only
	// newest (the entry whose insertion needs the room) is left: a fresh
	// insert is never its own victim.
	victim(newest *entry) *entry
	// settle ends an eviction episode: the room is made.
	settle()
	// each calls fn for every resident entry until fn returns false; fn
	// must not change the policy.
	each(fn func(*entry) bool)
	len() int
	purge()
	// lockFree reports whether hits may skip the shard lock.
	lockFree() bool
}

func newPolicy(p Policy, shareBytes int64, hash func(string) uint64) policy {
	switch p {
	case PolicyLRU:
		return &lruPolicy{}
	case PolicyTwoQueue:
		return newTwoQueue(shareBytes)
	}
	return newS3FIFO(shareBytes, hash)
}

// Queue numbers kept in entry.meta.
const (
	qNone = iota
	qSmall
	qMain
)

// lruPolicy is exact LRU: every hit moves its entry to the front, under the
// shard lock. It is the reference policy (it reproduces published LRU hit
// ratios exactly); the default policy's hits take no lock.
type lruPolicy struct{ q queue }

func (p *lruPolicy) add(e *entry, _ uint64) { p.q.pushHead(e) }
func (p *lruPolicy) remove(e *entry)        { p.q.unlink(e) }
func (p *lruPolicy) replace(old, e *entry, _ uint64) {
	p.q.unlink(old)
	p.q.pushHead(e)
}
func (p *lruPolicy) hit(e *entry)   { p.q.moveToHead(e) }
func (p *lruPolicy) settle()        {}
func (p *lruPolicy) lockFree() bool { return false }
func (p *lruPolicy) len() int       { return p.q.n }
func (p *lruPolicy) purge()         { p.q.clear() }
func (p *lruPolicy) each(fn func(*entry) bool) {
	p.q.each(fn)
}

func (p *lruPolicy) victim(newest *entry) *entry {
	v := p.q.tail
	if v == nil || v == newest {
		return nil
	}
	p.q.unlink(v)
	return v
}

// twoQueue is golang-lru's 2Q (TwoQueueCache) with its queues sized in bytes:
// entries seen once live in recent, entries seen again move to frequent, and
// keys evicted from recent are remembered in ghost so that a quick return
// goes straight to frequent. Eviction takes from recent while it holds more
// than its target share of bytes, else from frequent. Hits move entries
// between queues, so they take the shard lock.
type twoQueue struct {
	recent, frequent queue
	ghost            *simplelru.LRU[string, struct{}]
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
	if err != nil { // only for a size <= 0
		panic(err)
	}
	return &twoQueue{ghost: ghost, recentTarget: int64(float64(shareBytes) * twoQueueRecentRatio)}
}

func (q *twoQueue) add(e *entry, _ uint64) {
	if q.ghost.Remove(e.key) {
		e.setQueue(qMain)
		q.frequent.pushHead(e)
		return
	}
	e.setQueue(qSmall)
	q.recent.pushHead(e)
}

// replace follows golang-lru's TwoQueueCache.Add of a present key: the
// entry moves to (or within) frequent.
func (q *twoQueue) replace(old, e *entry, _ uint64) {
	q.remove(old)
	e.setQueue(qMain)
	q.frequent.pushHead(e)
}

func (q *twoQueue) hit(e *entry) {
	if e.queue() == qMain {
		q.frequent.moveToHead(e)
		return
	}
	q.recent.unlink(e)
	e.setQueue(qMain)
	q.frequent.pushHead(e)
}

func (q *twoQueue) remove(e *entry) {
	if e.queue() == qMain {
		q.frequent.unlink(e)
	} else {
		q.recent.unlink(e)
	}
}

func (q *twoQueue) victim(newest *entry) *entry {
	r, f := q.recent.tail, q.frequent.tail
	if r == newest {
		r = nil // the only entry in recent: keep it if anything else can go
	}
	if f == newest {
		f = nil
	}
	switch {
	case r != nil && (q.recent.bytes > q.recentTarget || f == nil):
		q.recent.unlink(r)
		q.ghost.Add(r.key, struct{}{})
		return r
	case f != nil:
		q.frequent.unlink(f)
		return f
	}
	return nil
}

func (q *twoQueue) settle()        {}
func (q *twoQueue) lockFree() bool { return false }
func (q *twoQueue) len() int       { return q.recent.n + q.frequent.n }

func (q *twoQueue) each(fn func(*entry) bool) {
	if q.recent.each(fn) {
		q.frequent.each(fn)
	}
}

func (q *twoQueue) purge() {
	q.recent.clear()
	q.frequent.clear()
	q.ghost.Purge()
}
