package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Generator yields key indexes in [0, n) for a fixed n.
type Generator interface {
	// Next returns the next key index.
	Next() uint64
}

// Distribution names accepted by New.
const (
	Zipfian          = "zipfian"
	ScrambledZipfian = "scrambled"
	Uniform          = "uniform"
	Hotspot          = "hotspot"
)

// DefaultTheta is YCSB's zipfian constant.
const DefaultTheta = 0.99

// Default hotspot shape, as YCSB's hotspotdatafraction/hotspotopnfraction.
const (
	DefaultHotSetFraction = 0.2
	DefaultHotOpFraction  = 0.8
)

// Spec describes a key distribution. The zero value of each field takes the
// default named on it.
type Spec struct {
	// Distribution is one of Zipfian, ScrambledZipfian, Uniform, Hotspot.
	// Empty means Zipfian.
	Distribution string
	// Keys is the number of distinct keys; it must be positive.
	Keys uint64
	// Theta is the zipfian skew, in (0, 1). Zero means DefaultTheta.
	Theta float64
	// HotSetFraction is the share of keys that are hot (Hotspot only).
	// Zero means DefaultHotSetFraction.
	HotSetFraction float64
	// HotOpFraction is the share of operations that go to the hot set
	// (Hotspot only). Zero means DefaultHotOpFraction.
	HotOpFraction float64
}

// Seed returns a PCG source for stream i of a run seeded with seed, so
// goroutines of one run draw independent, reproducible streams.
func Seed(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(i)*0x9e3779b97f4a7c15+1))
}

// New builds the generator s describes, drawing from r.
func New(s Spec, r *rand.Rand) (Generator, error) {
	switch strings.ToLower(s.Distribution) {
	case "", Zipfian:
		return NewZipfian(s.Keys, s.Theta, r)
	case ScrambledZipfian:
		return NewScrambledZipfian(s.Keys, s.Theta, r)
	case Uniform:
		return NewUniform(s.Keys, r)
	case Hotspot:
		return NewHotspot(s.Keys, s.HotSetFraction, s.HotOpFraction, r)
	}
	return nil, fmt.Errorf("%w: unknown distribution %q (want %s, %s, %s or %s)",
		ErrInvalid, s.Distribution, Zipfian, ScrambledZipfian, Uniform, Hotspot)
}

// uniform picks every key with the same probability.
type uniform struct {
	n uint64
	r *rand.Rand
}

// NewUniform returns a generator of uniformly chosen keys in [0, n).
func NewUniform(n uint64, r *rand.Rand) (Generator, error) {
	if n == 0 {
		return nil, fmt.Errorf("%w: uniform over 0 keys", ErrInvalid)
	}
	return &uniform{n: n, r: r}, nil
}

func (u *uniform) Next() uint64 { return u.r.Uint64N(u.n) }

// hotspot is YCSB's HotspotIntegerGenerator: a hot set of the first
// hotSet keys receives a hotOp share of the operations.
type hotspot struct {
	hot, cold uint64
	hotOp     float64
	r         *rand.Rand
}

// NewHotspot returns YCSB's hotspot generator over [0, n): the first
// hotSet·n keys receive a hotOp share of the picks, uniformly; the rest
// share the remainder uniformly. Zero fractions take the defaults.
func NewHotspot(n uint64, hotSet, hotOp float64, r *rand.Rand) (Generator, error) {
	if hotSet == 0 {
		hotSet = DefaultHotSetFraction
	}
	if hotOp == 0 {
		hotOp = DefaultHotOpFraction
	}
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: hotspot over 0 keys", ErrInvalid)
	case !(hotSet > 0 && hotSet <= 1) || !(hotOp > 0 && hotOp <= 1):
		return nil, fmt.Errorf("%w: hotspot fractions %v, %v must be in (0, 1]", ErrInvalid, hotSet, hotOp)
	}
	hot := uint64(float64(n) * hotSet)
	if hot == 0 {
		hot = 1
	}
	return &hotspot{hot: hot, cold: n - hot, hotOp: hotOp, r: r}, nil
}

func (h *hotspot) Next() uint64 {
	if h.cold == 0 || h.r.Float64() < h.hotOp {
		return h.r.Uint64N(h.hot)
	}
	return h.hot + h.r.Uint64N(h.cold)
}

// zipfian is YCSB's ZipfianGenerator (J. Gray et al., "Quickly Generating
// Billion-Record Synthetic Databases", SIGMOD 1994): key 0 is the most
// popular, key i has probability proportional to 1/(i+1)^θ.
type zipfian struct {
	items             uint64
	theta, alpha, eta float64
	zetan, half       float64 // zeta(items, θ); 1 + 0.5^θ
	r                 *rand.Rand
}

// NewZipfian returns a zipfian generator over [0, n) with skew θ in (0, 1);
// θ == 0 means DefaultTheta. Construction costs O(n) (it sums zeta(n, θ)).
// Unlike math/rand/v2's Zipf, which needs s > 1, this covers YCSB's 0.99.
func NewZipfian(n uint64, theta float64, r *rand.Rand) (Generator, error) {
	if theta == 0 {
		theta = DefaultTheta
	}
	if err := checkZipf(n, theta); err != nil {
		return nil, err
	}
	return newZipfian(n, theta, zeta(n, theta), r), nil
}

func checkZipf(n uint64, theta float64) error {
	if n == 0 {
		return fmt.Errorf("%w: zipfian over 0 keys", ErrInvalid)
	}
	if !(theta > 0 && theta < 1) {
		return fmt.Errorf("%w: zipfian θ %v must be in (0, 1)", ErrInvalid, theta)
	}
	return nil
}

func newZipfian(items uint64, theta, zetan float64, r *rand.Rand) *zipfian {
	zeta2 := zeta(2, theta)
	return &zipfian{
		items: items,
		theta: theta,
		alpha: 1 / (1 - theta),
		zetan: zetan,
		eta:   (1 - math.Pow(2/float64(items), 1-theta)) / (1 - zeta2/zetan),
		half:  1 + math.Pow(0.5, theta),
		r:     r,
	}
}

// zeta returns Σ_{i=1..n} 1/i^θ.
func zeta(n uint64, theta float64) float64 {
	var sum float64
	for i := uint64(1); i <= n; i++ {
		sum += 1 / math.Pow(float64(i), theta)
	}
	return sum
}

func (z *zipfian) Next() uint64 {
	u := z.r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.half {
		return 1
	}
	v := uint64(float64(z.items) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if v >= z.items { // rounding at u → 1
		v = z.items - 1
	}
	return v
}

// YCSB's scrambled zipfian draws from a zipfian over 10^10 items whose
// zeta for θ = 0.99 is precomputed, then hashes into the key range.
const (
	scrambledItems = 10_000_000_000
	scrambledZetan = 26.46902820178302
)

type scrambled struct {
	z *zipfian
	n uint64
}

// NewScrambledZipfian returns YCSB's ScrambledZipfianGenerator over [0, n):
// zipfian popularity, but the popular keys are spread over the key space by
// an FNV-1a 64-bit hash instead of being the lowest indexes. As in YCSB, for
// θ = 0.99 (the default) the underlying zipfian spans 10^10 items with
// YCSB's precomputed zeta, which makes the head flatter than a zipfian over
// n; for any other θ it spans n items. Hash collisions merge a few keys.
func NewScrambledZipfian(n uint64, theta float64, r *rand.Rand) (Generator, error) {
	if theta == 0 {
		theta = DefaultTheta
	}
	if err := checkZipf(n, theta); err != nil {
		return nil, err
	}
	if theta == DefaultTheta {
		return &scrambled{z: newZipfian(scrambledItems, theta, scrambledZetan, r), n: n}, nil
	}
	return &scrambled{z: newZipfian(n, theta, zeta(n, theta), r), n: n}, nil
}

func (s *scrambled) Next() uint64 { return fnvHash64(s.z.Next()) % s.n }

// fnvHash64 is YCSB's Utils.fnvhash64: FNV-1a over the 8 little-endian bytes
// of v, then Java's Math.abs of the signed result.
func fnvHash64(v uint64) uint64 {
	const (
		offset = 0xCBF29CE484222325
		prime  = 1099511628211
	)
	h := uint64(offset)
	for range 8 {
		h ^= v & 0xff
		v >>= 8
		h *= prime
	}
	if int64(h) < 0 {
		h = uint64(-int64(h))
	}
	return h
}
