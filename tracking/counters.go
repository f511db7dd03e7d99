package tracking

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// counters counts the outcomes of Lookup exactly, on stripes: each
// goroutine adds to the stripe its stack address picks, so two goroutines
// running on different cores almost always write different cache lines,
// and a hit costs one uncontended atomic add. (A counter per shard would
// put every core's hits on a hot key onto one line; a sync.Pool-striped
// counter costs more than the rest of the hit.)
type counters struct {
	stripes []stripe
	shift   uint // 64 - log2(len(stripes))
}

type stripe struct {
	tagHits            [256]atomic.Uint64 // hits by Item.Tag; their sum is Hits
	misses, unverified atomic.Uint64
	_                  [48]byte // the next stripe starts on its own cache line
}

func newCounters() *counters {
	n := 4
	for n < 4*runtime.GOMAXPROCS(0) && n < 64 {
		n <<= 1
	}
	c := &counters{stripes: make([]stripe, n), shift: 64}
	for ; n > 1; n >>= 1 {
		c.shift--
	}
	return c
}

// local returns the calling goroutine's stripe. Goroutine stacks are
// distinct memory, so the address of a local variable tells goroutines
// apart; a stack that moves (grows) just picks another stripe.
func (c *counters) local() *stripe {
	var b byte
	p := uint64(uintptr(unsafe.Pointer(&b)))
	return &c.stripes[(p*0x9e3779b97f4a7c15)>>c.shift]
}

// sum adds every stripe's counts into st.
func (c *counters) sum(st *Stats) {
	for i := range c.stripes {
		s := &c.stripes[i]
		for t := range s.tagHits {
			n := s.tagHits[t].Load()
			st.TagHits[t] += n
			st.Hits += n
		}
		st.Misses += s.misses.Load()
		st.UnverifiedServes += s.unverified.Load()
	}
}
