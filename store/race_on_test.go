//go:build race

package store_test

// raceEnabled: under the race detector Pebble runs its invariant checks
// (its internal/invariants build on race), which allocate at random, so
// allocation bounds do not hold.
const raceEnabled = true
