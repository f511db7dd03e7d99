package tracking

// s3fifo is the default policy: S3-FIFO (Yang et al., "FIFO queues are
// all you need for cache eviction", SOSP 2023) sized in bytes, with a
// TinyLFU frequency sketch deciding the one case S3-FIFO leaves to chance.
//
// New entries enter small, a FIFO holding s3SmallShare of the shard's
// bytes (the admission window). When small is over its share, its oldest
// entry leaves: into main if it was hit while in small, else out of the
// cache, its key remembered by ghost. A key that comes back while ghost
// remembers it goes straight to main. Main is a CLOCK: its oldest entry,
// if hit since the hand last passed, goes back to the head with its count
// lowered; otherwise it is evicted. So one-hit wonders and scans pass
// through small without flushing main.
//
// TinyLFU (sketch) counts every insertion and every hit the policy
// collects (a count in small, a decrement by the hand): an entry leaving
// small unhit is still admitted to main if the sketch says it is clearly
// more frequent than main's oldest entry (a key read often, but each time
// just after it was evicted). Admission is byte-aware: an entry promoted
// into main that needs more than one victim to fit must beat each further
// victim in the sketch, or it goes instead.
//
// Hits take no lock: they raise the entry's saturating 2-bit count
// (entry.touch), which the policy reads under the lock when the entry
// reaches the end of its queue. A hot entry stops being written after
// three hits, until the hand passes it again.
type s3fifo struct {
	small, main queue
	smallTarget int64
	sk          sketch
	gh          ghost
	hash        func(string) uint64
	// owed is the entry promoted into main in the current eviction
	// episode; owedBytes is what it still needs freed, after owedVictims
	// victims.
	owed        *entry
	owedBytes   int64
	owedVictims int
}

const (
	// s3SmallShare is the admission window's share of a shard's bytes.
	s3SmallShare = 0.05
	// s3RescueMargin is how much more frequent (in sketch counts) than
	// main's oldest entry an unhit entry leaving small must be to be kept.
	s3RescueMargin = 2
)

func newS3FIFO(shareBytes int64, hash func(string) uint64) *s3fifo {
	return &s3fifo{smallTarget: int64(float64(shareBytes) * s3SmallShare), hash: hash}
}

func (p *s3fifo) lockFree() bool { return true }
func (p *s3fifo) hit(*entry)     {}
func (p *s3fifo) len() int       { return p.small.n + p.main.n }

func (p *s3fifo) add(e *entry, h uint64) {
	n := p.small.n + p.main.n + 1
	p.sk.ensure(n)
	p.gh.ensure(n)
	p.sk.add(h)
	if p.gh.has(h) {
		e.setQueue(qMain)
		p.main.pushHead(e)
		p.promoted(e)
		return
	}
	e.setQueue(qSmall)
	p.small.pushHead(e)
}

// replace keeps the key's place: e takes old's queue and position, and the
// write counts as a hit.
func (p *s3fifo) replace(old, e *entry, h uint64) {
	q := &p.small
	if old.queue() == qMain {
		q = &p.main
	}
	if old == p.owed {
		p.owed = e
	}
	e.setQueue(old.queue())
	e.setFreq(old.freq() + 1)
	q.replace(old, e)
	p.sk.add(h)
}

func (p *s3fifo) remove(e *entry) {
	if e == p.owed {
		p.owed = nil
	}
	if e.queue() == qMain {
		p.main.unlink(e)
	} else {
		p.small.unlink(e)
	}
	e.setQueue(qNone)
}

// promoted notes that e entered main during an eviction episode.
func (p *s3fifo) promoted(e *entry) {
	p.owed, p.owedBytes, p.owedVictims = e, e.size(), 0
}

func (p *s3fifo) settle() { p.owed = nil }

func (p *s3fifo) victim(newest *entry) *entry {
	for p.small.bytes > p.smallTarget && p.small.tail != nil && p.small.tail != newest {
		t := p.small.tail
		p.small.unlink(t)
		h := p.hash(t.key)
		f := t.freq()
		for range f {
			p.sk.add(h)
		}
		if f > 0 || (p.main.tail != nil && p.sk.estimate(h) > p.sk.estimate(p.hash(p.main.tail.key))+s3RescueMargin) {
			t.setFreq(0)
			t.setQueue(qMain)
			p.main.pushHead(t)
			p.promoted(t)
			continue
		}
		t.setQueue(qNone)
		p.gh.add(h)
		return t
	}
	if v := p.mainVictim(newest); v != nil {
		return v
	}
	// Main holds nothing but newest: take small's oldest, if it is not
	// newest itself.
	if t := p.small.tail; t != nil && t != newest {
		p.small.unlink(t)
		t.setQueue(qNone)
		p.gh.add(p.hash(t.key))
		return t
	}
	return nil
}

// mainVictim runs main's clock hand to an entry not hit since the hand last
// passed and unlinks it, or returns nil if main holds nothing but newest.
func (p *s3fifo) mainVictim(newest *entry) *entry {
	// Each pass lowers every count by one and counts are at most 3, so
	// four passes find a victim.
	for range 4*p.main.n + 1 {
		v := p.main.tail
		if v == nil || (v == newest && p.main.n == 1) {
			return nil
		}
		if f := v.freq(); f > 0 || v == newest {
			if f > 0 {
				v.setFreq(f - 1)
				p.sk.add(p.hash(v.key))
			}
			p.main.moveToHead(v)
			continue
		}
		if o := p.owed; o != nil && o != v && p.owedVictims > 0 &&
			p.sk.estimate(p.hash(o.key)) <= p.sk.estimate(p.hash(v.key)) {
			// o is large and not worth the further victims it needs.
			p.owed = nil
			p.main.unlink(o)
			if o == newest { // never the first victim of its own insertion
				o.setQueue(qSmall)
				p.small.pushHead(o)
				continue
			}
			o.setQueue(qNone)
			p.gh.add(p.hash(o.key))
			return o
		}
		p.main.unlink(v)
		v.setQueue(qNone)
		if p.owed != nil {
			p.owedVictims++
			if p.owedBytes -= v.size(); p.owedBytes <= 0 {
				p.owed = nil
			}
		}
		return v
	}
	return nil
}

func (p *s3fifo) each(fn func(*entry) bool) {
	if p.small.each(fn) {
		p.main.each(fn)
	}
}

func (p *s3fifo) purge() {
	p.small.clear()
	p.main.clear()
	p.owed = nil
	p.gh.clear()
}
