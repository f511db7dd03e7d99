//go:build race

package herd

// raceEnabled: the race detector drops sync.Pool items on purpose, so
// allocation bounds do not hold under it.
const raceEnabled = true
