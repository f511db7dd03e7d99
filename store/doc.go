// Package store is thermos's disk tier: a local Pebble database of entries
// with expiry, so a restarted process comes back warm.
//
// Not built yet: see the foundation issue.
package store
