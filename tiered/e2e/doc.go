// Package e2e holds end-to-end tests of package tiered through its public
// API only: a linearizability checker over histories recorded from several
// OS processes and from writers that are not thermos code, and fault
// injection through a real TCP proxy. It is a module of its own so that the
// checkers and proxies it uses are never required by the library module.
package e2e
