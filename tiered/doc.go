// Package tiered is thermos's public cache: it routes keys by prefix to the
// memory, disk and Redis tiers and the caller's loader, with read-through,
// early refresh, stale serving and a warm, revalidated restart.
//
// Not built yet: see the tiered issue.
package tiered
