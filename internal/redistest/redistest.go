// Package redistest starts private, real redis-server processes for tests.
//
// Each Start runs its own redis-server on a free loopback port, in a
// temporary directory, without persistence unless asked, and stops it in
// t.Cleanup. The server can be stopped, killed, restarted on the same port and
// paused to simulate faults.
//
// The redis-server binary is found on PATH. When it is missing the test fails
// with a message naming the Debian package (redis-server); it is skipped
// instead only when the environment variable THERMOS_SKIP_REDIS is set to 1,
// so a missing server never lets a suite pass silently.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SkipEnv is the environment variable that, set to 1, makes Start skip the
// test when redis-server is not installed instead of failing it.
const SkipEnv = "THERMOS_SKIP_REDIS"

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 20 * time.Second

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
	tb   testing.TB
	bin  string
	dir  string
	port int
	opts Options

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when cmd's process has been reaped.
	exited chan struct{}
	paused bool
}

// Binary returns the path of redis-server, failing or skipping tb as the
// package documentation describes when it is missing.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(SkipEnv) == "1" {
			tb.Skipf("redis-server not found and %s=1: skipping", SkipEnv)
		}
		tb.Fatalf("redis-server not found on PATH: install the Debian package redis-server "+
			"(apt-get install redis-server), or set %s=1 to skip tests that need it", SkipEnv)
	}
	return bin
}

// Start launches a private redis-server and returns once it answers PING.
func Start(tb testing.TB, opts *Options) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb), dir: tb.TempDir()}
	if opts != nil {
		s.opts = *opts
		s.opts.Args = append([]string(nil), opts.Args...)
	}
	// A port picked by the kernel can be taken by another process before
	// redis binds it; try a few.
	var err error
	for range 5 {
		s.port, err = FreePort()
		if err != nil {
			continue
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(s.cleanup)
	return s
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

func (s *Server) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.opts.Persist {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	return append(a, s.opts.Args...)
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args()...)
	// Die with the test binary, so a crashed test leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, s.logTail())
		default:
		}
		if err := s.ping(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", s.port, startTimeout, s.logTail())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// ping sends a PING with the server's password, if any, and expects PONG.
func (s *Server) ping() error {
	_, err := s.Do("PING")
	return err
}

// Do sends one command over a fresh connection and returns the reply's first
// line (without its type byte) for simple replies. It is for test plumbing;
// tests should talk to Redis through rueidis.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	if pw := s.password(); pw != "" {
		writeCommand(w, "AUTH", pw)
	}
	writeCommand(w, args...)
	if err := w.Flush(); err != nil {
		return "", err
	}
	if s.password() != "" {
		if _, err := readSimple(r); err != nil {
			return "", err
		}
	}
	return readSimple(r)
}

func writeCommand(w *bufio.Writer, args ...string) {
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
}

func readSimple(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("redistest: empty reply")
	}
	switch line[0] {
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line[1:], nil
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *Server) password() string {
	for i, a := range s.opts.Args {
		if a == "--requirepass" && i+1 < len(s.opts.Args) {
			return s.opts.Args[i+1]
		}
	}
	return ""
}

// CLI runs redis-cli against the server with args and returns its output. It
// fails the test if redis-cli is missing or exits non-zero.
func (s *Server) CLI(args ...string) string {
	s.tb.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		s.tb.Fatalf("redis-cli not found on PATH: install the Debian package redis-tools")
	}
	a := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.port)}
	if pw := s.password(); pw != "" {
		a = append(a, "--no-auth-warning", "-a", pw)
	}
	out, err := exec.Command(bin, append(a, args...)...).CombinedOutput()
	if err != nil {
		s.tb.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (s *Server) Kill() {
	s.tb.Helper()
	s.kill()
}

func (s *Server) kill() {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGKILL)
	s.wait()
}

func (s *Server) wait() {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited != nil {
		<-exited
	}
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it.
func (s *Server) Stop() {
	s.tb.Helper()
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGTERM)
	select {
	case <-s.exitedChan():
	case <-time.After(startTimeout):
		s.kill()
	}
}

func (s *Server) exitedChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exited
}

// Restart stops the server if it is running and starts it again on the same
// port and directory. Without Persist the data is gone.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.Running() {
		s.Stop()
	}
	var err error
	deadline := time.Now().Add(startTimeout)
	for {
		if err = s.start(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether the process is alive (paused counts as alive).
func (s *Server) Running() bool {
	select {
	case <-s.exitedChan():
		return false
	default:
		return true
	}
}

// Pause freezes the server with SIGSTOP: connections stay open but nothing
// answers, like a silent partition.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() {
	s.signal(syscall.SIGCONT)
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
}

func (s *Server) cleanup() { s.kill() }
