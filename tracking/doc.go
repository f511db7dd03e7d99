// Package tracking is the in-process memory tier, kept consistent with Redis
// by RESP3 client-side tracking in broadcast (BCAST) mode.
//
// Not built yet: see the memory-tier issue.
package tracking
