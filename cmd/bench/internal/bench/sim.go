package bench

import (
	"io"
	"runtime"
	"sync"

	arc "github.com/hashicorp/golang-lru/arc/v2"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/maypok86/otter/v2"

	"github.com/thermoscache/thermos/cmd/bench/internal/trace"
)

// policies compared by the hit-ratio scenario, in table order.
func policies() []string { return []string{PolicyLRU, Policy2Q, PolicyARC, PolicyOtter} }

// sim is a single-threaded hit-ratio simulation of one policy and size:
// access looks key up and fills it on a miss (demand fill).
type sim struct {
	access func(k uint64) bool
	close  func()
	hits   int64
	n      int64
}

func (s *sim) step(k uint64) {
	s.n++
	if s.access(k) {
		s.hits++
	}
}

func (s *sim) ratio() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.hits) / float64(s.n)
}

func newSim(policy string, size int) (*sim, error) {
	s := &sim{close: func() {}}
	var err error
	switch policy {
	case PolicyLRU:
		// golang-lru's LRU without the lock lru.Cache adds: same policy.
		var c *simplelru.LRU[uint64, struct{}]
		if c, err = simplelru.NewLRU[uint64, struct{}](size, nil); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case Policy2Q:
		var c *lru.TwoQueueCache[uint64, struct{}]
		if c, err = lru.New2Q[uint64, struct{}](size); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case PolicyARC:
		var c *arc.ARCCache[uint64, struct{}]
		if c, err = arc.NewARC[uint64, struct{}](size); err == nil {
			s.access = demandFill(c.Get, func(k uint64) { c.Add(k, struct{}{}) })
		}
	case PolicyOtter:
		var c *otter.Cache[uint64, struct{}]
		if c, err = otter.New(&otter.Options[uint64, struct{}]{MaximumSize: size}); err == nil {
			s.access = demandFill(c.GetIfPresent, func(k uint64) { c.Set(k, struct{}{}) })
			s.close = func() { c.StopAllGoroutines() }
		}
	default:
		return nil, errUnknownPolicy(policy)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// demandFill is one access of a read-through cache: a hit, or a miss that
// fills the key.
func demandFill(get func(uint64) (struct{}, bool), add func(uint64)) func(uint64) bool {
	return func(k uint64) bool {
		if _, ok := get(k); ok {
			return true
		}
		add(k)
		return false
	}
}

func errUnknownPolicy(p string) error {
	_, _, err := newLocal(p, 1)
	return err
}

// chunkSize is how many accesses feed hands each sim at a time: one sim
// works through a whole chunk while its cache is hot in the CPU's caches,
// instead of all sims stepping in lockstep and evicting each other.
const chunkSize = 1 << 16

// feed drives every sim over the accesses that next supplies, chunk by
// chunk, spreading the sims over GOMAXPROCS goroutines. next fills buf and
// returns how many keys it wrote, or io.EOF when there are no more.
func feed(sims []*sim, next func(buf []uint64) (int, error)) error {
	workers := min(runtime.GOMAXPROCS(0), len(sims))
	buf := make([]uint64, chunkSize)
	for {
		n, err := next(buf)
		if n > 0 {
			chunk := buf[:n]
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := w; i < len(sims); i += workers {
						for _, k := range chunk {
							sims[i].step(k)
						}
					}
				})
			}
			wg.Wait()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sliceSource returns a feed source over keys.
func sliceSource(keys []uint64) func([]uint64) (int, error) {
	return func(buf []uint64) (int, error) {
		n := copy(buf, keys)
		keys = keys[n:]
		if len(keys) == 0 {
			return n, io.EOF
		}
		return n, nil
	}
}

// replayTrace streams one trace through every sim, at most limit accesses
// (0: all), and returns how many accesses it replayed.
func replayTrace(path string, f trace.Format, limit int, sims []*sim, tick func(n int)) (int, error) {
	r, err := trace.Open(path, f)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	total := 0
	err = feed(sims, func(buf []uint64) (int, error) {
		if limit > 0 {
			buf = buf[:min(len(buf), limit-total)]
		}
		n := 0
		for n < len(buf) {
			k, err := r.Next()
			if err != nil {
				total += n
				return n, err
			}
			buf[n] = k
			n++
		}
		total += n
		tick(total)
		if limit > 0 && total >= limit {
			return n, io.EOF
		}
		return n, nil
	})
	return total, err
}
