package bench

import (
	"io"

	arc "github.com/hashicorp/golang-lru/arc/v2"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/maypok86/otter/v2"

	"github.com/thermoscache/thermos/internal/bench/trace"
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
	switch policy {
	case PolicyLRU:
		// golang-lru's LRU without the lock lru.Cache adds: same policy.
		c, err := simplelru.NewLRU[uint64, struct{}](size, nil)
		if err != nil {
			return nil, err
		}
		s.access = func(k uint64) bool {
			if _, ok := c.Get(k); ok {
				return true
			}
			c.Add(k, struct{}{})
			return false
		}
	case Policy2Q:
		c, err := lru.New2Q[uint64, struct{}](size)
		if err != nil {
			return nil, err
		}
		s.access = func(k uint64) bool {
			if _, ok := c.Get(k); ok {
				return true
			}
			c.Add(k, struct{}{})
			return false
		}
	case PolicyARC:
		c, err := arc.NewARC[uint64, struct{}](size)
		if err != nil {
			return nil, err
		}
		s.access = func(k uint64) bool {
			if _, ok := c.Get(k); ok {
				return true
			}
			c.Add(k, struct{}{})
			return false
		}
	case PolicyOtter:
		c, err := otter.New(&otter.Options[uint64, struct{}]{MaximumSize: size})
		if err != nil {
			return nil, err
		}
		s.access = func(k uint64) bool {
			if _, ok := c.GetIfPresent(k); ok {
				return true
			}
			c.Set(k, struct{}{})
			return false
		}
		s.close = func() { c.StopAllGoroutines() }
	default:
		return nil, errUnknownPolicy(policy)
	}
	return s, nil
}

func errUnknownPolicy(p string) error {
	_, _, err := newLocal(p, 1)
	return err
}

// replayTrace streams one trace through every sim at once, at most limit
// accesses (0: all), and returns how many accesses it replayed.
func replayTrace(path string, f trace.Format, limit int, sims []*sim, tick func(n int)) (int, error) {
	r, err := trace.Open(path, f)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n := 0
	for limit == 0 || n < limit {
		k, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
		for _, s := range sims {
			s.step(k)
		}
		n++
		if n%(1<<18) == 0 {
			tick(n)
		}
	}
	return n, nil
}
