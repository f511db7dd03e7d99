package tracking

import (
	"math/bits"
	"sync/atomic"
)

// index maps a shard's keys to their entries. Hits read it without any
// lock; every change happens under the shard lock. It takes the key's hash
// from the caller (the same hash picks the shard), so a lookup hashes the
// key once, and a slot holds the entry pointer itself, so the entry is one
// load away.
//
// It is an open-addressing table of groups in the manner of Swiss tables:
// each group has groupSlots entry pointers and one control word with a
// byte per slot (empty, deleted, or 0x80 | 7 bits of the hash), so a probe
// compares a whole group's tags in a few instructions and dereferences
// only entries whose tag matches. Groups are probed linearly; a group with
// an empty slot ends a probe.
//
// Readers see a consistent table: a slot's pointer is stored before its
// control byte publishes it, and cleared after the byte retires it; a
// reader that sees a tag and then a nil or different entry just moves on.
// Growing or cleaning the table builds a new one and publishes it with one
// atomic store; a reader still walking the old one sees the state at that
// moment, which is at least as new as the start of its lookup.
type index struct {
	t atomic.Pointer[table]
	// live and used (live plus tombstones) count the current table's slots.
	// Guarded by the shard lock.
	live, used int
}

const (
	groupSlots = 7
	ctrlEmpty  = 0x00
	ctrlDel    = 0x01
	lsbs       = 0x0101010101010101
	msbs       = 0x0080808080808080 // the high bit of the groupSlots slot bytes
)

type group struct {
	ctrl atomic.Uint64
	ents [groupSlots]atomic.Pointer[entry]
}

type table struct {
	groups []group
	n      uint64 // len(groups), any count (not only powers of two)
}

func newTable(groups int) *table {
	return &table{groups: make([]group, groups), n: uint64(groups)}
}

// tagOf is a key's control byte: the hash's top 7 bits, with the high bit
// set so it never reads as empty or deleted.
func tagOf(h uint64) uint64 { return 0x80 | h>>57 }

// start is a key's first group: the hash, remixed (the shard took its low
// bits, the tag its top ones), scaled to the group count by a multiply.
func (t *table) start(h uint64) uint64 {
	g, _ := bits.Mul64(h*0x9e3779b97f4a7c15, t.n)
	return g
}

// next is the group after g.
func (t *table) next(g uint64) uint64 {
	if g++; g == t.n {
		return 0
	}
	return g
}

// matchByte returns the high bit of every slot byte of ctrl equal to b.
func matchByte(ctrl, b uint64) uint64 {
	x := ctrl ^ (b * lsbs)
	// Exact zero-byte test: a byte's high bit ends up set iff it was 0.
	y := (x&^(0x80*lsbs) + 0x7f*lsbs) | x
	return ^y & msbs
}

// slotOf turns one bit of a match into its slot number.
func slotAt(m uint64) int { return bits.TrailingZeros64(m) >> 3 }

// find returns key's entry, or nil. It takes no lock.
func (ix *index) find(h uint64, key string) *entry {
	t := ix.t.Load()
	tag := tagOf(h)
	g := t.start(h)
	for range len(t.groups) {
		gr := &t.groups[g]
		ctrl := gr.ctrl.Load()
		for m := matchByte(ctrl, tag); m != 0; m &= m - 1 {
			if e := gr.ents[slotAt(m)].Load(); e != nil && e.key == key {
				return e
			}
		}
		if matchByte(ctrl, ctrlEmpty) != 0 {
			return nil
		}
		g = t.next(g)
	}
	return nil
}

// put stores e under h, replacing and returning the entry of the same key
// if there is one. REQUIRES: the shard lock; hash is the shard's hash
// function, for rebuilding.
func (ix *index) put(h uint64, e *entry, hash func(string) uint64) (old *entry) {
	t := ix.t.Load()
	tag := tagOf(h)
	g := t.start(h)
	freeG, freeS := -1, -1
	for range len(t.groups) {
		gr := &t.groups[g]
		ctrl := gr.ctrl.Load()
		for m := matchByte(ctrl, tag); m != 0; m &= m - 1 {
			s := slotAt(m)
			if cur := gr.ents[s].Load(); cur != nil && cur.key == e.key {
				gr.ents[s].Store(e)
				return cur
			}
		}
		if freeG < 0 {
			if m := matchByte(ctrl, ctrlEmpty) | matchByte(ctrl, ctrlDel); m != 0 {
				freeG, freeS = int(g), slotAt(m)
			}
		}
		if matchByte(ctrl, ctrlEmpty) != 0 {
			break
		}
		g = t.next(g)
	}
	// A new key. Keep at least an eighth of the slots empty, so probes
	// stay short and every probe ends.
	if freeG < 0 || (ix.used+1)*8 > len(t.groups)*groupSlots*7 {
		ix.rebuild(ix.live+1, hash)
		ix.insertNew(ix.t.Load(), h, e)
		return nil
	}
	gr := &t.groups[freeG]
	ctrl := gr.ctrl.Load()
	if byte(ctrl>>(8*freeS)) == ctrlEmpty {
		ix.used++
	}
	ix.live++
	gr.ents[freeS].Store(e)
	gr.ctrl.Store(ctrl&^(0xff<<(8*freeS)) | tag<<(8*freeS))
	return nil
}

// insertNew adds e, whose key is known to be absent, to t, which has room.
// REQUIRES: the shard lock.
func (ix *index) insertNew(t *table, h uint64, e *entry) {
	tag := tagOf(h)
	g := t.start(h)
	for {
		gr := &t.groups[g]
		ctrl := gr.ctrl.Load()
		if m := matchByte(ctrl, ctrlEmpty) | matchByte(ctrl, ctrlDel); m != 0 {
			s := slotAt(m)
			if byte(ctrl>>(8*s)) == ctrlEmpty {
				ix.used++
			}
			ix.live++
			gr.ents[s].Store(e)
			gr.ctrl.Store(ctrl&^(0xff<<(8*s)) | tag<<(8*s))
			return
		}
		g = t.next(g)
	}
}

// remove deletes e (found by pointer) from under h; it reports whether e
// was there. REQUIRES: the shard lock.
func (ix *index) remove(h uint64, e *entry) bool {
	t := ix.t.Load()
	tag := tagOf(h)
	g := t.start(h)
	for range len(t.groups) {
		gr := &t.groups[g]
		ctrl := gr.ctrl.Load()
		for m := matchByte(ctrl, tag); m != 0; m &= m - 1 {
			s := slotAt(m)
			if gr.ents[s].Load() != e {
				continue
			}
			// No probe ever went past a group that has an empty slot, so
			// in such a group the slot can become empty again.
			b := uint64(ctrlDel)
			if matchByte(ctrl, ctrlEmpty) != 0 {
				b = ctrlEmpty
				ix.used--
			}
			gr.ctrl.Store(ctrl&^(0xff<<(8*s)) | b<<(8*s))
			gr.ents[s].Store(nil)
			ix.live--
			return true
		}
		if matchByte(ctrl, ctrlEmpty) != 0 {
			return false
		}
		g = t.next(g)
	}
	return false
}

// rebuild publishes a new table sized for n live entries (3/4 full, so it
// grows by a sixth before the next rebuild: a slot costs 9 bytes, and a
// table between 3/4 and 7/8 full about 11.5 per entry) holding every live
// entry, and drops the tombstones. REQUIRES: the shard lock.
func (ix *index) rebuild(n int, hash func(string) uint64) {
	groups := max((n*4+groupSlots*3-1)/(groupSlots*3), 1)
	old := ix.t.Load()
	nt := newTable(groups)
	ix.live, ix.used = 0, 0
	if old != nil {
		for i := range old.groups {
			gr := &old.groups[i]
			for s := range gr.ents {
				if e := gr.ents[s].Load(); e != nil {
					ix.insertNew(nt, hash(e.key), e)
				}
			}
		}
	}
	ix.t.Store(nt)
}

// grow makes room for n more entries than the table holds, so that many
// inserts do not rebuild it. REQUIRES: the shard lock.
func (ix *index) grow(n int, hash func(string) uint64) {
	t := ix.t.Load()
	if (ix.used+n)*8 <= len(t.groups)*groupSlots*7 {
		return
	}
	ix.rebuild(ix.live+n, hash)
}

// reset publishes an empty table. REQUIRES: the shard lock.
func (ix *index) reset() {
	ix.t.Store(newTable(1))
	ix.live, ix.used = 0, 0
}
