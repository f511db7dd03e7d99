package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A child is this test binary re-executed in a role (roleEnv), with its
// configuration as JSON in cfgEnv. The parent talks to it by lines: commands
// on its stdin, answers on its stdout; its stderr goes to a file whose tail
// is printed when something goes wrong.

const cfgEnv = "THERMOS_E2E_CONFIG"

type child struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, closed at EOF
	stderr string      // path
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

// startChild runs role with cfg and waits for its "ready" line.
func startChild(t testing.TB, name, role string, cfg any) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("executable: %v", err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("child config: %v", err)
	}
	c := &child{t: t, name: name, lines: make(chan string, 1024), exited: make(chan struct{}),
		stderr: filepath.Join(t.TempDir(), name+".stderr")}
	c.cmd = exec.Command(exe, "-test.run=^$")
	c.cmd.Env = append(os.Environ(), roleEnv+"="+role, cfgEnv+"="+string(b))
	// Dies with the test binary: no child outlives a crashed parent.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	ef, err := os.Create(c.stderr)
	if err != nil {
		t.Fatalf("child stderr: %v", err)
	}
	c.cmd.Stderr = ef
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatalf("child stdin: %v", err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start child %s: %v", name, err)
	}
	ef.Close()
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill()
	})
	c.expect("ready", 60*time.Second)
	return c
}

// send writes one command line.
func (c *child) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		c.t.Fatalf("child %s: send %q: %v%s", c.name, cmd, err, c.tail())
	}
}

// next returns the next stdout line, failing the test after timeout or if
// the child exits first.
func (c *child) next(timeout time.Duration) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.exited
			c.t.Fatalf("child %s exited (%v) before answering%s", c.name, c.err, c.tail())
		}
		return l
	case <-time.After(timeout):
		c.t.Fatalf("child %s: no answer within %v%s", c.name, timeout, c.tail())
	}
	return ""
}

// expect reads lines until one equals want.
func (c *child) expect(want string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := c.next(time.Until(deadline)); l == want {
			return
		}
	}
}

// kill sends SIGKILL and waits for the process to go.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// quit asks the child to finish and waits for a clean exit.
func (c *child) quit(timeout time.Duration) {
	c.t.Helper()
	c.send("quit")
	select {
	case <-c.exited:
		if c.err != nil {
			c.t.Errorf("child %s: %v%s", c.name, c.err, c.tail())
		}
	case <-time.After(timeout):
		c.t.Errorf("child %s did not exit within %v%s", c.name, timeout, c.tail())
		c.kill()
	}
}

// tail returns the end of the child's stderr, for failure messages.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.stderr)
	s := strings.TrimSpace(string(b))
	if len(s) > 3000 {
		s = "…" + s[len(s)-3000:]
	}
	if s == "" {
		return ""
	}
	return fmt.Sprintf("\n--- %s stderr ---\n%s", c.name, s)
}

// roleIO is a child's side of the line protocol.
type roleIO struct {
	in  *bufio.Scanner
	out *bufio.Writer
}

func newRoleIO() *roleIO {
	return &roleIO{in: bufio.NewScanner(os.Stdin), out: bufio.NewWriter(os.Stdout)}
}

func (r *roleIO) say(format string, args ...any) {
	fmt.Fprintf(r.out, format+"\n", args...)
	r.out.Flush()
}

// command returns the next command line; "quit" at EOF (the parent went).
func (r *roleIO) command() string {
	if !r.in.Scan() {
		return "quit"
	}
	return strings.TrimSpace(r.in.Text())
}

// roleConfig decodes the child's configuration into cfg.
func roleConfig(cfg any) error {
	return json.Unmarshal([]byte(os.Getenv(cfgEnv)), cfg)
}
