package herd

import (
	"math"
	"time"
)

// ShouldRefresh is XFetch's decision (Vattani, Chierichetti and Lowenstein,
// "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015): refresh a
// value early when
//
//	now − delta·beta·ln(r) ≥ softExpiry
//
// where delta is how long the last rebuild took, beta > 0 scales eagerness
// (1 is the paper's optimum) and r is uniform in (0, 1]. Seen at a time x
// before softExpiry, the probability of true is exp(−x/(delta·beta)): it
// rises to 1 at softExpiry, so requests spread over time refresh once, a
// little before the value expires, instead of all at once after it.
//
// It is pure and never blocks. At or after softExpiry it always returns true.
// A delta or beta <= 0 means no early refresh. An r <= 0 counts as the
// smallest possible draw (refresh), an r > 1 as 1 (no early refresh).
func ShouldRefresh(now, softExpiry time.Time, delta time.Duration, beta, r float64) bool {
	if !now.Before(softExpiry) {
		return true
	}
	if delta <= 0 || beta <= 0 || r >= 1 {
		return false
	}
	if r <= 0 {
		return true
	}
	gap := float64(softExpiry.Sub(now))
	return -float64(delta)*beta*math.Log(r) >= gap
}
