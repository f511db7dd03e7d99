// Package herd makes a cold or expiring key be rebuilt once across the
// goroutines of a process and the processes sharing a Redis: in-process
// single-flight, a shared Redis lease lock with fenced writes, and XFetch
// early refresh.
//
// Not built yet: see the herd issue.
package herd
