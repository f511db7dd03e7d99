package tracking

// ghost remembers the hashes of keys recently dropped from the policy's
// small queue, so that a key that comes back soon is admitted to the main
// queue at once (S3-FIFO's ghost queue). It is a pair of Bloom filters
// instead of a queue of keys: adds go to cur, and once cur has taken half
// the horizon it becomes old and an empty filter takes its place, so a
// key is remembered for between half and all of the horizon's adds, at
// ghostBitsPerKey bits per remembered key instead of a key and a map slot.
// Not safe for concurrent use; the shard lock guards it.
type ghost struct {
	cur, old []uint64
	capacity int // entries the filters are sized for
	most     int // the most entries the cache has held
	n, half  int // adds to cur; adds before cur turns old
}

const (
	// ghostHorizon is how many evictions, per entry of capacity, a ghost
	// is remembered for.
	ghostHorizon = 1.5
	// ghostBitsPerKey and ghostHashes give the filters a false-positive
	// rate of about 0.2 % when full.
	ghostBitsPerKey = 16
	ghostHashes     = 4
)

// ensure sizes the ghost for a cache of n entries: the horizon follows the
// most entries the cache has held, the filters grow (and forget) by steps
// of a quarter.
func (g *ghost) ensure(n int) {
	if n <= g.most {
		return
	}
	g.most = n
	g.half = max(int(ghostHorizon*float64(n)/2), 1)
	if n <= g.capacity {
		return
	}
	g.capacity = max(n+n/4, 64)
	w := max(int(ghostHorizon*float64(g.capacity)/2)*ghostBitsPerKey/64, 1)
	g.cur, g.old = make([]uint64, w), make([]uint64, w)
	g.n = 0
}

func (g *ghost) bit(h uint64, i int) uint64 {
	return uint64(scale(spread(h, 8+i), len(g.cur)*64))
}

func inFilter(f []uint64, g *ghost, h uint64) bool {
	for i := range ghostHashes {
		b := g.bit(h, i)
		if f[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// has reports whether h was added within the horizon (or is a false
// positive).
func (g *ghost) has(h uint64) bool {
	return g.capacity > 0 && (inFilter(g.cur, g, h) || inFilter(g.old, g, h))
}

// add remembers h.
func (g *ghost) add(h uint64) {
	if g.capacity == 0 {
		return
	}
	for i := range ghostHashes {
		b := g.bit(h, i)
		g.cur[b/64] |= 1 << (b % 64)
	}
	if g.n++; g.n >= g.half {
		g.cur, g.old = g.old, g.cur
		clear(g.cur)
		g.n = 0
	}
}

func (g *ghost) clear() {
	clear(g.cur)
	clear(g.old)
	g.n = 0
}
