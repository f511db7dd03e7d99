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
// A Server is always the process it launched: Start and Restart return
// only once INFO server's process_id on the port is their child's PID, so a
// port taken by someone else between FreePort and the bind (the child then
// exits, and the other program may answer PING) is never mistaken for it;
// Start moves on to another port, a fixed port or a Restart fails with
// ErrPortTaken. FreePort never hands out the port of a server of this
// process that is not closed (down for a Restart, say), and Do refuses to
// dial while the process is not running. INFO and PING must be allowed to
// the default user (with the --requirepass password, if any) at start.
//
// It does not promise a particular Redis version, and it never touches a
// server it did not start.
package redisproc
