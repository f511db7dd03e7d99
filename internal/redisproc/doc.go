// Package redisproc starts and controls a private redis-server process: on
// a free loopback port, in its own directory, without persistence unless
// asked; and a private local Redis Cluster of such processes
// (StartCluster), joined with redis-cli --cluster create. The benchmark
// tool uses it directly; internal/redistest wraps it for tests.
//
// A Server dies with the process that started it (Linux parent-death
// signal), so a crashed program leaves no server behind. Its methods are
// safe for concurrent use.
//
// It does not promise a particular Redis version, and it never touches a
// server it did not start.
package redisproc
