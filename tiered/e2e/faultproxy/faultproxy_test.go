package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// Each toxic is checked to do what it says against a real redis-server,
// through a plain RESP client on one TCP connection (so that which
// connection a fault hits is the test's choice, not a client library's).

// client is one RESP connection.
type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

// do sends one command and reads its reply by ctx's deadline: a simple
// string, an error reply as an error, or a bulk string's contents.
func (cl *client) do(ctx context.Context, args ...string) (string, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	_ = cl.c.SetDeadline(dl)
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(cl.c, b.String()); err != nil {
		return "", err
	}
	line, err := cl.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "":
		return "", errors.New("empty reply")
	case line[0] == '-':
		return "", errors.New(line[1:])
	case line[0] == '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(cl.r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line[1:], nil
}

func timed(ctx context.Context, cl *client, args ...string) (string, time.Duration, error) {
	start := time.Now()
	v, err := cl.do(ctx, args...)
	return v, time.Since(start), err
}

func add(t *testing.T, p *Proxy, lane string, tx Toxic) *Fault {
	t.Helper()
	f, err := p.Add(lane, tx)
	if err != nil {
		t.Fatalf("Add(%s, %v): %v", lane, tx, err)
	}
	return f
}

func remove(t *testing.T, f *Fault) {
	t.Helper()
	if err := f.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestPassThrough(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	cl := dial(t, p.Addr())
	if v, err := cl.do(t.Context(), "SET", "k", "v"); err != nil || v != "OK" {
		t.Fatalf("SET through the proxy = %q, %v", v, err)
	}
	if got, err := srv.Do("GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET on the server = %q, %v; want the proxied write", got, err)
	}
	if n := p.Accepted(DefaultLane); n != 1 {
		t.Fatalf("Accepted = %d, want 1", n)
	}
}

// TestBlackhole: a PING through an upstream blackhole times out by the
// context's deadline; a downstream blackhole lets the write through and
// loses its reply. Removing the toxic closes the held connections; new ones
// pass.
func TestBlackhole(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	f := add(t, p, DefaultLane, Blackhole(Upstream))
	cl := dial(t, p.Addr())
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	_, took, err := timed(ctx, cl, "PING")
	cancel()
	if !isTimeout(err) || took < deadline {
		t.Fatalf("PING through a blackhole = %v after %v; want a timeout at the %v deadline", err, took, deadline)
	}
	remove(t, f)
	if _, err := cl.do(t.Context(), "PING"); err == nil {
		t.Errorf("the blackholed connection still answers after Remove; want it closed")
	}
	if v, err := dial(t, p.Addr()).do(t.Context(), "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING on a new connection after Remove = %q, %v", v, err)
	}

	f = add(t, p, DefaultLane, Blackhole(Downstream))
	ctx, cancel = context.WithTimeout(t.Context(), deadline)
	_, err = dial(t, p.Addr()).do(ctx, "SET", "lost-ack", "1")
	cancel()
	if !isTimeout(err) {
		t.Fatalf("SET through a downstream blackhole = %v, want a timeout", err)
	}
	if got, err := srv.Do("GET", "lost-ack"); err != nil || got != "1" {
		t.Fatalf("server GET lost-ack = %q, %v; the command should have reached it", got, err)
	}
	remove(t, f)
}

// TestLatency: every round trip takes at least the configured delay (less
// the jitter); removing the toxic takes it away.
func TestLatency(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	cl := dial(t, p.Addr())
	const latency, jitter = 400 * time.Millisecond, 100 * time.Millisecond
	f := add(t, p, DefaultLane, Latency(Downstream, latency, jitter))
	var min, max time.Duration
	for i := range 5 {
		v, took, err := timed(t.Context(), cl, "PING")
		if err != nil || v != "PONG" {
			t.Fatalf("PING = %q, %v", v, err)
		}
		if took < latency-jitter {
			t.Errorf("round trip %d took %v, want >= %v", i, took, latency-jitter)
		}
		if i == 0 || took < min {
			min = took
		}
		max = maxDur(max, took)
	}
	t.Logf("with %v ± %v downstream: round trips %v to %v", latency, jitter, min, max)
	up := add(t, p, DefaultLane, Latency(Upstream, latency, 0))
	if _, took, err := timed(t.Context(), cl, "PING"); err != nil || took < 2*latency-jitter {
		t.Errorf("PING with latency both ways took %v (%v), want >= %v", took, err, 2*latency-jitter)
	}
	remove(t, up)
	remove(t, f)
	// Healed: the same connection, no delay left. Sent after Remove
	// returned, so no chunk can still be in the toxic.
	if _, took, err := timed(t.Context(), cl, "PING"); err != nil || took >= latency-jitter {
		t.Errorf("PING after Remove took %v (%v), want < %v", took, err, latency-jitter)
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// TestResetPeer: the connection is reset (ECONNRESET, not a clean EOF),
// whether it was open before the toxic or opened after it, in either
// direction; removing it lets new connections work.
func TestResetPeer(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	for _, dir := range []Direction{Downstream, Upstream} {
		before := dial(t, p.Addr())
		if _, err := before.do(t.Context(), "PING"); err != nil {
			t.Fatal(err)
		}
		f := add(t, p, DefaultLane, ResetPeer(dir, 0))
		for name, cl := range map[string]*client{"open before": before, "opened after": dial(t, p.Addr())} {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			_, err := cl.do(ctx, "PING")
			cancel()
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s: PING on a connection %s the toxic = %v, want ECONNRESET", dir, name, err)
			}
		}
		remove(t, f)
		if v, err := dial(t, p.Addr()).do(t.Context(), "PING"); err != nil || v != "PONG" {
			t.Fatalf("%s: PING on a new connection after Remove = %q, %v", dir, v, err)
		}
	}
}

// TestBandwidth: a 32 KiB value at 16 KB/s takes about 2 s; the lower bound
// asserted leaves room for the first chunk going at once.
func TestBandwidth(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	big := strings.Repeat("x", 32<<10)
	if _, err := srv.Do("SET", "big", big); err != nil {
		t.Fatal(err)
	}
	cl := dial(t, p.Addr())
	f := add(t, p, DefaultLane, Bandwidth(Downstream, 16))
	v, took, err := timed(t.Context(), cl, "GET", "big")
	if err != nil || v != big {
		t.Fatalf("GET big = %d bytes, %v", len(v), err)
	}
	if took < time.Second {
		t.Errorf("32 KiB at 16 KB/s took %v, want >= 1s", took)
	}
	remove(t, f)
	if v, healed, err := timed(t.Context(), cl, "GET", "big"); err != nil || v != big || healed >= took/2 {
		t.Errorf("GET big after Remove took %v (%d bytes, %v); with the toxic %v", healed, len(v), err, took)
	}
}

// TestSlicer: the reply arrives whole, in small delayed segments: 4 KiB in
// 16-byte segments 1 ms apart takes >= 256 ms.
func TestSlicer(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	val := strings.Repeat("0123456789abcdef", 256)
	if _, err := srv.Do("SET", "v", val); err != nil {
		t.Fatal(err)
	}
	f := add(t, p, DefaultLane, Slicer(Downstream, 16, 4, time.Millisecond))
	cl := dial(t, p.Addr())
	v, took, err := timed(t.Context(), cl, "GET", "v")
	if err != nil || v != val {
		t.Fatalf("GET through the slicer = %d bytes, %v; want the value whole", len(v), err)
	}
	if took < 200*time.Millisecond {
		t.Errorf("4 KiB in ~16-byte segments 1 ms apart took %v, want >= 200ms", took)
	}
	remove(t, f)
}

// TestLanes: a fault on one lane leaves the other lane's connections alone;
// connections go to lanes by the order they were accepted in.
func TestLanes(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), &Options{Route: ByIndex("first", "rest")})
	f := add(t, p, "rest", Blackhole(Upstream))
	first := dial(t, p.Addr())
	if _, err := first.do(t.Context(), "PING"); err != nil {
		t.Fatal(err) // also makes sure first was accepted before rest
	}
	rest := dial(t, p.Addr())
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := rest.do(ctx, "PING")
	cancel()
	if !isTimeout(err) {
		t.Fatalf("PING on the blackholed lane = %v, want a timeout", err)
	}
	if v, err := first.do(t.Context(), "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING on the other lane = %q, %v; want PONG", v, err)
	}
	if a, b := p.Accepted("first"), p.Accepted("rest"); a != 1 || b != 1 {
		t.Fatalf("accepted first=%d rest=%d, want 1 and 1", a, b)
	}
	remove(t, f)
}

// TestSilent: a blackholed address accepts and never answers.
func TestSilent(t *testing.T) {
	s := ListenSilent(t)
	cl := dial(t, s.Addr())
	const deadline = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	if _, took, err := timed(ctx, cl, "PING"); !isTimeout(err) || took < deadline {
		t.Fatalf("PING to a silent listener = %v after %v; want a timeout at %v", err, took, deadline)
	}
	if n := s.Accepted(); n != 1 {
		t.Fatalf("Accepted = %d, want 1", n)
	}
}

func TestBadToxics(t *testing.T) {
	srv := redistest.Start(t, nil)
	p := Start(t, srv.Addr(), nil)
	for _, tx := range []Toxic{
		Latency(Downstream, -time.Millisecond, 0),
		Latency(Downstream, time.Millisecond, 2*time.Millisecond),
		Timeout(Upstream, 0),
		ResetPeer(Upstream, -time.Second),
		Bandwidth(Downstream, 0),
		Slicer(Downstream, 0, 0, 0),
		Slicer(Downstream, 10, 10, 0),
		{},
	} {
		if _, err := p.Add(DefaultLane, tx); !errors.Is(err, ErrBadToxic) {
			t.Errorf("Add(%v) = %v, want ErrBadToxic", tx, err)
		}
	}
	f := add(t, p, DefaultLane, Latency(Downstream, time.Millisecond, 0))
	p.Close()
	if _, err := p.Add(DefaultLane, Blackhole(Upstream)); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close = %v, want ErrClosed", err)
	}
	if err := f.Remove(); !errors.Is(err, ErrClosed) {
		t.Errorf("Remove after Close = %v, want ErrClosed", err)
	}
}

// TestCloseLeavesNothing: Close (the test's cleanup) ends every goroutine
// the proxy, its lanes and their toxics started, with connections open and
// faults in place.
func TestCloseLeavesNothing(t *testing.T) {
	srv := redistest.Start(t, nil)
	base := runtime.NumGoroutine()
	t.Run("proxy", func(t *testing.T) {
		p := Start(t, srv.Addr(), &Options{Route: ByIndex("a", "b")})
		add(t, p, "a", Latency(Downstream, 50*time.Millisecond, 10*time.Millisecond))
		add(t, p, "b", Blackhole(Upstream))
		add(t, p, "b", Slicer(Downstream, 8, 2, 0))
		for range 3 {
			dial(t, p.Addr())
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := dial(t, p.Addr()).do(ctx, "PING"); !isTimeout(err) {
			t.Fatalf("PING on the blackholed lane = %v, want a timeout", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond) // polling the goroutine count
	}
}
