package tracking

import "math/bits"

// sketch is TinyLFU's frequency estimate: a count-min sketch of 4-bit
// counters (four rows, one counter per row for each key) in front of a
// doorkeeper, a Bloom filter that absorbs each key's first occurrence so
// one-hit wonders never reach the counters. Every sampleFactor × capacity
// recorded occurrences the counters are halved and the doorkeeper is
// cleared, so the estimate follows the recent past. Not safe for
// concurrent use; the shard lock guards it.
//
// estimate never underestimates what was recorded since the last halving
// (up to the counters' saturation at 15, plus the doorkeeper's one), and
// halving never raises a counter; sketch_test.go checks both against an
// exact count.
type sketch struct {
	table    []uint64 // 16 counters of 4 bits per word
	door     []uint64 // doorkeeper bits
	capacity int      // entries the table is sized for
	sample   int      // occurrences between halvings
	added    int      // occurrences recorded since the last halving
}

const (
	sketchSampleFactor = 10 // halve after this many occurrences per entry
	// sketchCountersPerEntry sizes the table: counters per entry of
	// capacity. Four rows share them.
	sketchCountersPerEntry = 4
	// sketchDoorBitsPerEntry sizes the doorkeeper.
	sketchDoorBitsPerEntry = 16
)

// ensure sizes the sketch for n entries: the sample follows the most
// entries the cache has held; the table grows by steps of a quarter, and
// growing starts afresh (the old counts were for a smaller cache).
func (s *sketch) ensure(n int) {
	s.sample = max(s.sample, sketchSampleFactor*n)
	if n <= s.capacity {
		return
	}
	// Room for a quarter more, so a cache that grows slowly is not reset
	// at every new entry.
	c := max(n+n/4, 64)
	s.table = make([]uint64, c*sketchCountersPerEntry/16)
	s.door = make([]uint64, max(c*sketchDoorBitsPerEntry/64, 1))
	s.capacity = c
	s.added = 0
}

// spread remixes a key's hash for row i (0..3 for the counters, 4 for the
// doorkeeper): the shard already took the hash's low bits, so the rows
// must not depend on them alone (splitmix64's finaliser).
func spread(h uint64, i int) uint64 {
	x := h + uint64(i+1)*0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// row returns row i's counter for hash h: its word and its shift.
func (s *sketch) row(h uint64, i int) (int, uint) {
	x := spread(h, i)
	return scale(x, len(s.table)), uint(x&15) * 4
}

// scale maps a well-mixed x to [0, n) with a multiply (Lemire's reduction).
func scale(x uint64, n int) int {
	hi, _ := bits.Mul64(x, uint64(n))
	return int(hi)
}

func (s *sketch) doorBits(h uint64) (a, b uint64) {
	n := len(s.door) * 64
	x := spread(h, 4)
	return uint64(scale(x, n)), uint64(scale(x<<32|x>>32, n))
}

func (s *sketch) inDoor(h uint64) bool {
	a, b := s.doorBits(h)
	return s.door[a/64]&(1<<(a%64)) != 0 && s.door[b/64]&(1<<(b%64)) != 0
}

// estimate returns how often h occurred recently, 0 to 16.
func (s *sketch) estimate(h uint64) int {
	if s.capacity == 0 {
		return 0
	}
	n := 15
	for i := range 4 {
		w, sh := s.row(h, i)
		n = min(n, int(s.table[w]>>sh&15))
	}
	if s.inDoor(h) {
		n++
	}
	return n
}

// add records one occurrence of h.
func (s *sketch) add(h uint64) {
	if s.capacity == 0 {
		return
	}
	if a, b := s.doorBits(h); !s.inDoor(h) {
		s.door[a/64] |= 1 << (a % 64)
		s.door[b/64] |= 1 << (b % 64)
	} else {
		// Conservative update: raise only the counters at the minimum,
		// which keeps collisions from inflating the other rows.
		var w [4]int
		var sh [4]uint
		low := uint64(15)
		for i := range 4 {
			w[i], sh[i] = s.row(h, i)
			low = min(low, s.table[w[i]]>>sh[i]&15)
		}
		if low < 15 {
			for i := range 4 {
				if s.table[w[i]]>>sh[i]&15 == low {
					s.table[w[i]] += 1 << sh[i]
				}
			}
		}
	}
	if s.added++; s.added >= s.sample {
		s.halve()
	}
}

// halve ages every count by half and clears the doorkeeper.
func (s *sketch) halve() {
	for i, w := range s.table {
		s.table[i] = w >> 1 & (0x7 * 0x1111111111111111)
	}
	clear(s.door)
	s.added = 0
}
