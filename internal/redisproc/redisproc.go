package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds how long a server may take to answer PING.
const DefaultStartTimeout = 20 * time.Second

// startAttempts is how many free ports Start tries: a port picked by the
// kernel can be taken by another process before redis binds it.
const startAttempts = 5

// ErrNotFound is returned when redis-server is not on PATH. Test for it with
// errors.Is(err, redisproc.ErrNotFound).
var ErrNotFound = errors.New("redisproc: redis-server not found on PATH (install the Debian package redis-server)")

// ErrPortTaken is returned (wrapped) by Start with a fixed Options.Port and
// by Restart when a process other than the one just started answers on the
// port: a Server never hands its caller someone else's Redis. With a free
// port (Options.Port zero) Start moves on to another port instead.
var ErrPortTaken = errors.New("redisproc: another process answers on the port")

// ErrNotRunning is returned by Do when the server's process is not running:
// its port may belong to somebody else by now.
var ErrNotRunning = errors.New("redisproc: server not running")

// Options configures a server. A nil *Options is valid; every zero field
// takes the default described on it.
type Options struct {
	// Binary is the redis-server executable. Empty means the one on PATH.
	Binary string
	// Dir is the server's working directory. Empty means a new temporary
	// directory, removed by Close.
	Dir string
	// Port is the TCP port on 127.0.0.1. Zero means a free port.
	Port int
	// Persist turns on the append-only file (fsync always), so Kill and
	// Restart keep every acknowledged write. Off by default: nothing is kept.
	Persist bool
	// Args are extra redis-server arguments, such as "--requirepass", "pw".
	Args []string
	// StartTimeout bounds the wait for the first PONG. Zero means
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// TLS gives the server a TLS listener (--tls-port) on a second free
	// port, picked afresh on each attempt like the main one (TLSPort
	// returns it). Args must carry the certificate options.
	TLS bool

	// pick, if set, replaces FreePort: tests hand out taken ports with it.
	pick func() (int, error)
}

// Server is one running redis-server.
type Server struct {
	bin     string
	dir     string
	ownDir  bool
	port    int
	tlsPort int
	opts    Options
	timeout time.Duration

	mu struct {
		sync.Mutex
		cmd *exec.Cmd
		// exited is closed when cmd's process has been reaped.
		exited chan struct{}
		closed bool
	}
}

// reserved holds the ports of this process's servers from their start to
// their Close, so that FreePort never hands out the port of a server that
// is down for a Restart. Other processes are kept out by the identity
// check in start.
var reserved struct {
	sync.Mutex
	ports map[int]bool
}

func reserve(ports ...int) {
	reserved.Lock()
	defer reserved.Unlock()
	if reserved.ports == nil {
		reserved.ports = map[int]bool{}
	}
	for _, p := range ports {
		reserved.ports[p] = true
	}
}

func release(ports ...int) {
	reserved.Lock()
	defer reserved.Unlock()
	for _, p := range ports {
		delete(reserved.ports, p)
	}
}

func isReserved(port int) bool {
	reserved.Lock()
	defer reserved.Unlock()
	return reserved.ports[port]
}

// Binary returns the path of redis-server on PATH, or ErrNotFound.
func Binary() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNotFound
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// is not the port of a server this process started and has not closed.
// Another process may still take it before it is used: Start checks that the
// server answering is its own.
func FreePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !isReserved(port) {
			return port, nil
		}
	}
	return 0, errors.New("redisproc: no free port outside this process's servers")
}

func (s *Server) freePort() (int, error) {
	if s.opts.pick != nil {
		return s.opts.pick()
	}
	return FreePort()
}

// Start launches a redis-server and returns once it answers PING and is
// the process Start launched (INFO server's process_id is its PID), or an
// error (ErrNotFound without a binary) once ctx is done or the start
// timeout passes. With a free port, a port taken before the server bound it
// (the server exits, or another process answers) is given up for another,
// up to 5 times; with a fixed port the error wraps ErrPortTaken when
// another process answers there.
func Start(ctx context.Context, opts *Options) (*Server, error) {
	s := &Server{}
	if opts != nil {
		s.opts = *opts
		s.opts.Args = append([]string(nil), opts.Args...)
	}
	s.bin, s.dir, s.port, s.timeout = s.opts.Binary, s.opts.Dir, s.opts.Port, s.opts.StartTimeout
	if s.timeout <= 0 {
		s.timeout = DefaultStartTimeout
	}
	if s.bin == "" {
		var err error
		if s.bin, err = Binary(); err != nil {
			return nil, err
		}
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "redisproc-")
		if err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
		s.dir, s.ownDir = d, true
	}
	var err error
	for range startAttempts {
		if s.opts.Port == 0 {
			if s.port, err = s.freePort(); err != nil {
				continue
			}
		}
		if s.opts.TLS {
			if s.tlsPort, err = s.freePort(); err != nil {
				continue
			}
		}
		if err = s.start(ctx); err == nil || (s.opts.Port != 0 && !s.opts.TLS) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if s.ownDir {
			os.RemoveAll(s.dir)
		}
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	reserve(s.ports()...)
	return s, nil
}

// ports returns the ports the server listens on.
func (s *Server) ports() []int {
	if s.tlsPort != 0 {
		return []int{s.port, s.tlsPort}
	}
	return []int{s.port}
}

// Addr returns the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// TLSPort returns the TLS listener's port, or 0 without Options.TLS.
func (s *Server) TLSPort() int { return s.tlsPort }

// PID returns the process ID of the server's current process (the one the
// last Start or Restart launched), or 0 if none was launched.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.cmd == nil || s.mu.cmd.Process == nil {
		return 0
	}
	return s.mu.cmd.Process.Pid
}

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
	if s.tlsPort != 0 {
		a = append(a, "--tls-port", strconv.Itoa(s.tlsPort))
	}
	return append(a, s.opts.Args...)
}

func (s *Server) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, s.args()...)
	// Die with this process, so a crash leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { // ends when the process is reaped; Kill/Close make sure it is
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.mu.cmd, s.mu.exited = cmd, exited
	s.mu.Unlock()

	// Redis binds every listener (port, TLS port, cluster bus port) before
	// it serves anyone, and exits if one is taken: once our process answers
	// on the port, all of them are its own.
	pid := cmd.Process.Pid
	deadline := time.Now().Add(s.timeout)
	for {
		select {
		case <-exited:
			tail := s.logTail()
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("%w: redis-server on port %d could not bind: %s", ErrPortTaken, s.port, tail)
			}
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, tail)
		default:
		}
		got, err := s.probe()
		switch {
		case err == nil && got == pid:
			return nil
		case err == nil:
			// Someone else holds the port: ours cannot bind it.
			s.Kill()
			return fmt.Errorf("%w: port %d answers as process %d, not as redis-server %d", ErrPortTaken, s.port, got, pid)
		case errors.Is(err, errForeign):
			s.Kill()
			return fmt.Errorf("%w: port %d: %v", ErrPortTaken, s.port, err)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.Kill()
			if ctx.Err() != nil {
				return fmt.Errorf("redis-server on port %d: %w", s.port, ctx.Err())
			}
			return fmt.Errorf("redis-server on port %d did not answer PING within %v (%v): %s", s.port, s.timeout, err, s.logTail())
		}
		time.Sleep(5 * time.Millisecond) // polling the port, not synchronising goroutines
	}
}

// errForeign marks a probe answered by something that is not a Redis
// reporting its process ID.
var errForeign = errors.New("not a redis-server reporting its process_id")

// probe sends INFO server and PING on one connection, authenticating like
// Do. It returns the process_id of the process that answered once that
// process is ready (PONG, not LOADING); an error wrapping errForeign if the
// answer is no Redis INFO; any other error while nobody, or no ready Redis,
// answers.
func (s *Server) probe() (int, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	pw := s.Password()
	if pw != "" {
		writeCommand(w, "AUTH", pw)
	}
	writeCommand(w, "INFO", "server")
	writeCommand(w, "PING")
	if err := w.Flush(); err != nil {
		return 0, err
	}
	if pw != "" {
		if _, err := readSimple(r); err != nil {
			return 0, err
		}
	}
	info, err := readSimple(r)
	if err != nil {
		return 0, err
	}
	pong, err := readSimple(r)
	if err != nil {
		return 0, err // LOADING: ours, perhaps, but not ready
	}
	pid := 0
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 || pong != "PONG" {
		return 0, fmt.Errorf("%w: INFO server %q, PING %q", errForeign, lastLines(info, 2), pong)
	}
	return pid, nil
}

// LogTail returns the last lines of the server's log, for error messages.
func (s *Server) LogTail() string { return s.logTail() }

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// Do sends one command over a fresh connection (authenticating with the
// --requirepass argument, if any) and returns the reply's first line
// without its type byte, or a bulk string's contents. It is plumbing for
// checks and set-up; real clients should use rueidis. It returns
// ErrNotRunning, without dialling, when the process is not running: the
// port may have been taken by another program since.
func (s *Server) Do(args ...string) (string, error) {
	if !s.Running() {
		return "", fmt.Errorf("%w: %s", ErrNotRunning, s.Addr())
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	pw := s.Password()
	if pw != "" {
		writeCommand(w, "AUTH", pw)
	}
	writeCommand(w, args...)
	if err := w.Flush(); err != nil {
		return "", err
	}
	if pw != "" {
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
		return "", errors.New("redisproc: empty reply")
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
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line[1:], nil
}

// Password returns the --requirepass argument, or "".
func (s *Server) Password() string {
	for i, a := range s.opts.Args {
		if a == "--requirepass" && i+1 < len(s.opts.Args) {
			return s.opts.Args[i+1]
		}
	}
	return ""
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.cmd != nil && s.mu.cmd.Process != nil {
		_ = s.mu.cmd.Process.Signal(sig)
	}
}

func (s *Server) exitedChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.exited
}

// Kill sends SIGKILL (after SIGCONT, in case it is paused) and waits until
// the process is gone.
func (s *Server) Kill() {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGKILL)
	if ch := s.exitedChan(); ch != nil {
		<-ch
	}
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it; it kills
// the server if it has not exited within the start timeout.
func (s *Server) Stop() {
	s.signal(syscall.SIGCONT)
	s.signal(syscall.SIGTERM)
	ch := s.exitedChan()
	if ch == nil {
		return
	}
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		s.Kill()
	}
}

// Restart stops the server if it is running and starts it again on the
// same port(s) and directory. Without Persist the data is gone. It returns
// once the new process answers as itself, or an error (wrapping
// ErrPortTaken if another process answers on the port) once ctx is done or
// the start timeout passes.
func (s *Server) Restart(ctx context.Context) error {
	if s.Running() {
		s.Stop()
	}
	deadline := time.Now().Add(s.timeout)
	for {
		err := s.start(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("redisproc: restart: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // the old socket may linger briefly
	}
}

// Running reports whether the process is alive (paused counts as alive).
func (s *Server) Running() bool {
	ch := s.exitedChan()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// Pause freezes the server with SIGSTOP: connections stay open but nothing
// answers, like a silent partition.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Close kills the server and removes its directory if Start created it. It
// is safe to call twice.
func (s *Server) Close() error {
	s.Kill()
	s.mu.Lock()
	closed := s.mu.closed
	s.mu.closed = true
	s.mu.Unlock()
	if closed {
		return nil
	}
	release(s.ports()...)
	if !s.ownDir {
		return nil
	}
	return os.RemoveAll(s.dir)
}
