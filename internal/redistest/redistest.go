// Package redistest starts private, real redis-server processes for tests.
//
// Each Start runs its own redis-server on a free loopback port, in a
// temporary directory, without persistence unless asked, and stops it in
// t.Cleanup. The server can be stopped, killed, restarted on the same port and
// paused to simulate faults. The process handling lives in
// internal/redisproc; this package ties it to a testing.TB.
//
// The redis-server binary is found on PATH. When it is missing the test fails
// with a message naming the Debian package (redis-server); it is skipped
// instead only when the environment variable THERMOS_SKIP_REDIS is set to 1,
// so a missing server never lets a suite pass silently.
package redistest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/internal/redisproc"
)

// SkipEnv is the environment variable that, set to 1, makes Start skip the
// test when redis-server is not installed instead of failing it.
const SkipEnv = "THERMOS_SKIP_REDIS"

// Options configures a server. A nil *Options is valid.
type Options struct {
	// Persist turns on the append-only file (fsync always), so Kill and
	// Restart keep every acknowledged write. Off by default: nothing is kept.
	Persist bool
	// Args are extra redis-server arguments, such as "--requirepass", "pw".
	Args []string
}

// Server is one running redis-server owned by a test.
type Server struct {
	tb testing.TB
	p  *redisproc.Server
}

// Binary returns the path of redis-server, failing or skipping tb as the
// package documentation describes when it is missing.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := redisproc.Binary()
	if err != nil {
		if os.Getenv(SkipEnv) == "1" {
			tb.Skipf("redis-server not found and %s=1: skipping", SkipEnv)
		}
		tb.Fatalf("redis-server not found on PATH: install the Debian package redis-server "+
			"(apt-get install redis-server), or set %s=1 to skip tests that need it", SkipEnv)
	}
	return bin
}

// Start launches a private redis-server and returns once it answers PING
// as the process Start launched (its INFO process_id): never a server
// someone else started on a port that was free a moment before.
func Start(tb testing.TB, opts *Options) *Server {
	tb.Helper()
	return start(tb, opts, false)
}

func start(tb testing.TB, opts *Options, tls bool) *Server {
	tb.Helper()
	po := &redisproc.Options{Binary: Binary(tb), Dir: tb.TempDir(), TLS: tls}
	if opts != nil {
		po.Persist = opts.Persist
		po.Args = append([]string(nil), opts.Args...)
	}
	p, err := redisproc.Start(context.Background(), po)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	// Registered after TempDir's cleanup, so it runs before the directory
	// is removed. Close (not just Kill) gives the port back to FreePort.
	tb.Cleanup(func() { p.Close() })
	return &Server{tb: tb, p: p}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// belongs to no server of this test binary.
func FreePort() (int, error) { return redisproc.FreePort() }

// Addr returns the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return s.p.Addr() }

// Port returns the server's port.
func (s *Server) Port() int { return s.p.Port() }

// PID returns the process ID of the server's current process: it changes
// with every Restart.
func (s *Server) PID() int { return s.p.PID() }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.p.Dir() }

// Do sends one command over a fresh connection and returns the reply's first
// line (without its type byte) for simple replies. It is for test plumbing;
// tests should talk to Redis through rueidis.
func (s *Server) Do(args ...string) (string, error) { return s.p.Do(args...) }

// CLI runs redis-cli against the server with args and returns its output. It
// fails the test if redis-cli is missing or exits non-zero.
func (s *Server) CLI(args ...string) string {
	s.tb.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		s.tb.Fatalf("redis-cli not found on PATH: install the Debian package redis-tools")
	}
	a := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.p.Port())}
	if pw := s.p.Password(); pw != "" {
		a = append(a, "--no-auth-warning", "-a", pw)
	}
	out, err := exec.Command(bin, append(a, args...)...).CombinedOutput()
	if err != nil {
		s.tb.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Kill sends SIGKILL and waits until the process is gone.
func (s *Server) Kill() {
	s.tb.Helper()
	s.p.Kill()
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it.
func (s *Server) Stop() {
	s.tb.Helper()
	s.p.Stop()
}

// Restart stops the server if it is running and starts it again on the same
// port and directory. Without Persist the data is gone. It fails the test
// if another process answers on the port instead of the new server.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.p.Restart(context.Background()); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
}

// Running reports whether the process is alive (paused counts as alive).
func (s *Server) Running() bool { return s.p.Running() }

// Pause freezes the server with SIGSTOP: connections stay open but nothing
// answers, like a silent partition.
func (s *Server) Pause() { s.p.Pause() }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.p.Resume() }
