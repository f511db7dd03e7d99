package tracking

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// checkSketch replays ops on a sketch sized for size entries and checks it
// against exact counts: the estimate never falls below what was added
// since the last halving (capped at 16: 15 in the counters plus the
// doorkeeper), never exceeds 16, and halving never raises an estimate.
// ops: each byte adds key b%keys, or estimates it when b's top bit is set.
func checkSketch(t *testing.T, size int, keys uint8, ops []byte) {
	t.Helper()
	var s sketch
	s.ensure(size)
	keys = max(keys, 1)
	since := make(map[uint64]int) // adds since the last halving
	h := func(b byte) uint64 { return spread(uint64(b%keys), 99) }
	halvings := 0
	for i, b := range ops {
		k := h(b)
		if b&0x80 != 0 {
			continue
		}
		before := s.added
		var ests map[uint64]int
		if before+1 >= s.sample { // this add halves: note every estimate
			ests = make(map[uint64]int)
			for j := range keys {
				ests[h(j)] = s.estimate(h(j))
			}
		}
		s.add(k)
		since[k]++
		if s.added == 0 { // halved
			halvings++
			for kk, was := range ests {
				if now := s.estimate(kk); now > was {
					t.Fatalf("op %d: halving raised %x from %d to %d", i, kk, was, now)
				}
			}
			clear(since)
		}
		for kk, n := range since {
			est := s.estimate(kk)
			if est < min(n, 16) || est > 16 {
				t.Fatalf("op %d: estimate(%x) = %d after %d adds since the last halving", i, kk, est, n)
			}
		}
	}
}

func FuzzSketch(f *testing.F) {
	f.Add(uint16(1), uint8(1), []byte{0, 0, 0, 0x80})
	f.Add(uint16(64), uint8(200), []byte("the quick brown fox jumps over the lazy dog"))
	rng := rand.New(rand.NewPCG(1, 2))
	long := make([]byte, 5000)
	for i := range long {
		long[i] = byte(rng.IntN(20))
	}
	f.Add(uint16(3), uint8(20), long)
	f.Fuzz(func(t *testing.T, size uint16, keys uint8, ops []byte) {
		checkSketch(t, int(size%512)+1, keys, ops)
	})
}

// TestSketchProperties runs the fuzz property on long random streams:
// skewed, uniform, and one key only (saturation).
func TestSketchProperties(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 3))
		ops := make([]byte, 20000)
		for i := range ops {
			switch seed % 3 {
			case 0:
				ops[i] = byte(rng.IntN(128))
			case 1:
				ops[i] = byte(min(rng.ExpFloat64()*8, 127))
			default:
				ops[i] = 7
			}
		}
		checkSketch(t, 1+int(seed)*37, 128, ops)
	}
}

// The sketch must tell frequent keys from rare ones at its sized capacity:
// with 1,000 keys occurring 8 times and 9,000 occurring once, the frequent
// keys' median estimate is at least 6 and the rare ones' at most 2.
func TestSketchSeparates(t *testing.T) {
	var s sketch
	s.ensure(10000)
	key := func(i int) uint64 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		return spread(binary.LittleEndian.Uint64(b[:]), 7)
	}
	for r := range 8 {
		for i := range 1000 {
			s.add(key(i))
		}
		for i := range 9000 / 8 {
			s.add(key(1000 + r*(9000/8) + i))
		}
	}
	med := func(lo, hi int) int {
		var hist [17]int
		for i := lo; i < hi; i++ {
			hist[s.estimate(key(i))]++
		}
		for v, n := 0, 0; v < 17; v++ {
			if n += hist[v]; 2*n >= hi-lo {
				return v
			}
		}
		return 16
	}
	if f, r := med(0, 1000), med(1000, 10000); f < 6 || r > 2 {
		t.Errorf("median estimate: frequent %d, rare %d; want >= 6 and <= 2", f, r)
	}
}

// A key added to the ghost is remembered while fewer than half the
// horizon's adds followed it, and forgotten within the whole horizon (but
// for false positives, which stay rare).
func TestGhostHorizon(t *testing.T) {
	var g ghost
	g.ensure(1000)
	for i := range uint64(10000) {
		g.add(spread(i, 1))
		if back := i + 1 - uint64(g.half); i+1 >= uint64(g.half) && !g.has(spread(back, 1)) {
			t.Fatalf("key followed by %d adds (half the horizon is %d) forgotten", g.half-1, g.half)
		}
	}
	false_ := 0
	for i := range uint64(10000) {
		if g.has(spread(i+1<<40, 1)) {
			false_++
		}
	}
	if false_ > 100 {
		t.Errorf("%d false positives in 10,000 keys never added", false_)
	}
	old := 0
	for i := range uint64(5000) {
		if g.has(spread(i, 1)) {
			old++
		}
	}
	if old > 100 {
		t.Errorf("%d of 5,000 keys added 5,000+ adds ago still remembered (horizon %d)", old, 2*g.half)
	}
}
