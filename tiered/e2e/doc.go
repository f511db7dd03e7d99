// Package e2e holds end-to-end tests of package tiered through its public
// API only: a linearizability checker over histories recorded from several
// OS processes and from writers that are not thermos code, and fault
// injection through a real TCP proxy. It is a module of its own so that the
// checkers and proxies it uses are never required by the library module.
//
// The history check (TestHistory) re-executes the test binary as child
// processes: thermos processes that Get, GetOrLoad, Set and Delete through
// tiered on every kind of route (Memory|Redis, Memory|Disk|Redis,
// Disk|Redis, raw Memory|Redis and raw Memory|Disk|Redis), and a plain
// writer (rueidis SET, MSET, DEL, PEXPIRE, APPEND, SETRANGE, EVAL, redis-cli,
// and a reactor that overwrites or deletes a key the moment its keyspace SET
// event arrives). Each records every operation's call and return time and
// result in a history file. Meanwhile the harness kills a cache's tracking
// connection (CLIENT KILL), freezes Redis (SIGSTOP), restarts it with and
// without its data, and SIGKILLs a thermos process and starts another on
// the same directory. github.com/anishathalye/porcupine then checks each
// key's history against a register model in which a thermos read may
// return any value current at some instant in [call − δ, return]
// (stalenessBound), and after the writers stop every cache must agree with
// Redis. TestHistoryControl runs the same harness with processes that use
// Redis directly: the checker must accept it. TestChecker* feed the checker
// synthetic histories it must refuse or accept.
//
// The probes (TestProbeSetRacingExternalWrite, on one server and on a
// cluster) are issue 11's finding 1: Set racing another program's write
// that reacts to the Set's own keyspace event.
//
// Flags: -history.long runs the long history check (10 minutes, a fault
// every 20 s, 3 thermos processes; also THERMOS_E2E_LONG=1); -history.run
// overrides the run's length; -history.out keeps the HTML visualizations of
// violating keys in a directory of your choice.
package e2e
