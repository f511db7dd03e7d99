// Package memhit compares the memory tier (package tracking) with the
// in-process caches it is measured against — a plain map, golang-lru,
// otter — on one workload in one run: the cost of a hit, serial and
// parallel, and the heap an entry costs. It has no code outside its tests;
// it lives in the e2e module so that those caches never become
// requirements of the library module.
package memhit
