package tracking

import "sync/atomic"

// entry is one cached key: one allocation of 112 bytes on amd64 (a size
// class of its own), reached from the index in one load. Its item never
// changes once the entry is published (a write replaces the entry), so a
// lock-free hit may return a pointer to it.
type entry struct {
	item     Item   // never modified once the entry is published
	key      string // also the index's and the policy's key
	expireAt int64  // Unix ns: min(insert + MaxTTL, HardExpiry, write ttl)
	// meta packs what hits read and write without the lock: the epoch the
	// entry was verified in (0 = never: a warm start) above metaEpochShift,
	// the policy's queue, and a small access count that lock-free hits
	// raise (see metaFreqMask). Writers under the shard lock load and
	// store it whole; a hit's increment racing with such a store may be
	// lost, which costs the policy one access record and nothing else.
	meta atomic.Uint64
	// next and prev link the entry into its policy's queue. Guarded by the
	// shard lock.
	next, prev *entry
}

const (
	metaFreqMask   = 3 // accesses since the policy last looked, saturating
	metaQueueShift = 2
	metaQueueMask  = 3 << metaQueueShift
	metaEpochShift = 8
)

// epoch returns the epoch e was verified in; 0 means never.
func (e *entry) epoch() uint64 { return e.meta.Load() >> metaEpochShift }

// setEpoch stamps e as verified in epoch. REQUIRES: the shard lock.
func (e *entry) setEpoch(epoch uint64) {
	m := e.meta.Load()
	e.meta.Store(m&(1<<metaEpochShift-1) | epoch<<metaEpochShift)
}

// freq returns the access count hits have recorded since the policy last
// reset it.
func (e *entry) freq() uint64 { return e.meta.Load() & metaFreqMask }

// setFreq sets the access count. REQUIRES: the shard lock.
func (e *entry) setFreq(f uint64) {
	m := e.meta.Load()
	e.meta.Store(m&^metaFreqMask | min(f, metaFreqMask))
}

// queue returns the policy queue e is in. REQUIRES: the shard lock.
func (e *entry) queue() uint8 { return uint8(e.meta.Load() & metaQueueMask >> metaQueueShift) }

// setQueue records the policy queue e is in. REQUIRES: the shard lock.
func (e *entry) setQueue(q uint8) {
	m := e.meta.Load()
	e.meta.Store(m&^metaQueueMask | uint64(q)<<metaQueueShift)
}

// touch records a lock-free hit: it raises the access count unless it is
// saturated, so a hot entry's cache line stops being written after a few
// hits and readers on different cores share it read-only.
func (e *entry) touch(m uint64) {
	if m&metaFreqMask != metaFreqMask {
		e.meta.CompareAndSwap(m, m+1)
	}
}

// size is the number of bytes e is charged.
func (e *entry) size() int64 {
	return int64(len(e.key)) + int64(cap(e.item.Value)) + EntryOverhead
}

// queue is an intrusive doubly linked list of entries, newest at the head.
// Not safe for concurrent use; the shard lock guards it.
type queue struct {
	head, tail *entry
	n          int
	bytes      int64
}

func (q *queue) pushHead(e *entry) {
	e.prev, e.next = nil, q.head
	if q.head != nil {
		q.head.prev = e
	} else {
		q.tail = e
	}
	q.head = e
	q.n++
	q.bytes += e.size()
}

func (q *queue) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
	q.n--
	q.bytes -= e.size()
}

// replace puts e where old is.
func (q *queue) replace(old, e *entry) {
	e.prev, e.next = old.prev, old.next
	if e.prev != nil {
		e.prev.next = e
	} else {
		q.head = e
	}
	if e.next != nil {
		e.next.prev = e
	} else {
		q.tail = e
	}
	old.prev, old.next = nil, nil
	q.bytes += e.size() - old.size()
}

func (q *queue) moveToHead(e *entry) {
	if q.head == e {
		return
	}
	q.unlink(e)
	q.pushHead(e)
}

// each calls fn from the head to the tail until fn returns false; fn must
// not change the queue.
func (q *queue) each(fn func(*entry) bool) bool {
	for e := q.head; e != nil; e = e.next {
		if !fn(e) {
			return false
		}
	}
	return true
}

func (q *queue) clear() { *q = queue{} }
