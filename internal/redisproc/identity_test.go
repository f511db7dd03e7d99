package redisproc

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 11: a Server is always the process it started. A port picked free
// can be taken before redis-server binds it (the child then exits), and the
// taker may answer PING first: these tests hand Start such ports.

// needRedis skips without redis-server only when THERMOS_SKIP_REDIS=1.
func needRedis(t *testing.T) {
	t.Helper()
	if _, err := Binary(); err != nil {
		if os.Getenv("THERMOS_SKIP_REDIS") == "1" {
			t.Skip("redis-server not installed and THERMOS_SKIP_REDIS=1")
		}
		t.Fatal(err)
	}
}

// fakeRedis listens on addr ("127.0.0.1:0" for any port) and answers every
// command as a Redis would a probe: PING with PONG, INFO with this test
// process's ID as process_id, anything else with OK. It returns its port,
// how many commands it answered and a stop function, also run in
// t.Cleanup.
func fakeRedis(t *testing.T, addr string) (int, *atomic.Int64, func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var answered atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					args, err := readArray(r)
					if err != nil {
						return
					}
					var reply string
					switch strings.ToUpper(args[0]) {
					case "PING":
						reply = "+PONG\r\n"
					case "INFO":
						body := fmt.Sprintf("# Server\r\nredis_version:7.0.15\r\nprocess_id:%d\r\n", os.Getpid())
						reply = fmt.Sprintf("$%d\r\n%s\r\n", len(body), body)
					default:
						reply = "+OK\r\n"
					}
					if _, err := io.WriteString(c, reply); err != nil {
						return
					}
					answered.Add(1)
				}
			})
		}
	})
	stop := sync.OnceFunc(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	t.Cleanup(stop)
	return l.Addr().(*net.TCPAddr).Port, &answered, stop
}

// readArray reads one RESP array of bulk strings.
func readArray(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array header %q", line)
	}
	args := make([]string, n)
	for i := range args {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(hdr, "$")))
		if err != nil {
			return nil, fmt.Errorf("bad bulk header %q", hdr)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

// infoPID returns the process_id the server on s's port reports.
func infoPID(t *testing.T, s *Server) int {
	t.Helper()
	info, err := s.Do("INFO", "server")
	if err != nil {
		t.Fatalf("INFO server on %s: %v", s.Addr(), err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("process_id %q: %v", v, err)
			}
			return pid
		}
	}
	t.Fatalf("INFO server on %s has no process_id: %q", s.Addr(), info)
	return 0
}

// picker returns a pick function that hands out taken first, then free
// ports, and counts its calls.
func picker(taken ...int) (func() (int, error), *atomic.Int64) {
	var calls atomic.Int64
	return func() (int, error) {
		i := int(calls.Add(1)) - 1
		if i < len(taken) {
			return taken[i], nil
		}
		return FreePort()
	}, &calls
}

// TestStartSkipsAnsweredPort: the port Start picks is answered by another
// program before redis-server binds it. Start must not hand that program
// over as its server; it starts on another port.
func TestStartSkipsAnsweredPort(t *testing.T) {
	needRedis(t)
	fake, answered, _ := fakeRedis(t, "127.0.0.1:0")
	pick, calls := picker(fake)
	s, err := Start(context.Background(), &Options{pick: pick})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Port() == fake {
		t.Fatalf("Start handed over port %d, answered by another program (%d commands answered by it)", fake, answered.Load())
	}
	if got := infoPID(t, s); got != s.PID() || got == os.Getpid() {
		t.Fatalf("server on %s reports process_id %d; Start launched %d", s.Addr(), got, s.PID())
	}
	if calls.Load() < 2 {
		t.Errorf("%d ports picked, want a second one after the taken port", calls.Load())
	}
}

// TestStartFixedPortTakenByRedis: another redis-server already holds the
// port asked for. Start must fail with ErrPortTaken, not return the other
// server (whose data a test would then read and overwrite).
func TestStartFixedPortTakenByRedis(t *testing.T) {
	needRedis(t)
	other, err := Start(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Do("SET", "owner", "other"); err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), &Options{Port: other.Port(), StartTimeout: 5 * time.Second})
	if err == nil {
		got, _ := s.Do("GET", "owner")
		s.Close()
		t.Fatalf("Start on a port another redis-server holds succeeded; its GET owner = %q", got)
	}
	if !errors.Is(err, ErrPortTaken) {
		t.Errorf("Start on a taken port: %v, want ErrPortTaken", err)
	}
	if got, err := other.Do("GET", "owner"); err != nil || got != "other" {
		t.Errorf("the other server's GET owner = %q, %v; want it untouched", got, err)
	}
}

// TestRestartRefusesForeignServer: while the server is down, another
// program takes its port. Restart must fail with ErrPortTaken rather than
// report the other program as the restarted server; once the port is free
// again Restart brings up a new process of its own.
func TestRestartRefusesForeignServer(t *testing.T) {
	needRedis(t)
	s, err := Start(context.Background(), &Options{StartTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := s.PID()
	s.Kill()
	if _, err := s.Do("PING"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Do after Kill: %v, want ErrNotRunning (no dial to a port that may be someone else's)", err)
	}
	_, answered, stop := fakeRedis(t, s.Addr())
	if err := s.Restart(context.Background()); !errors.Is(err, ErrPortTaken) {
		t.Errorf("Restart with another program on the port: %v, want ErrPortTaken (%d commands answered by it)", err, answered.Load())
	}
	if s.Running() {
		t.Errorf("a redis-server child still runs after the refused Restart")
	}
	stop()
	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("Restart on the freed port: %v", err)
	}
	if pid := infoPID(t, s); pid != s.PID() || pid == first {
		t.Fatalf("after Restart process_id = %d, want the new child %d (not the first, %d)", pid, s.PID(), first)
	}
}

// TestStartTLSPortTaken: the TLS port picked is taken (redis-server exits
// when it cannot bind it). Start picks both ports again instead of failing.
func TestStartTLSPortTaken(t *testing.T) {
	needRedis(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	free, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pick, _ := picker(free, taken) // the main port first, then the TLS port
	s, err := Start(context.Background(), &Options{TLS: true, Args: tlsArgs(t), pick: pick})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.TLSPort() == taken || s.TLSPort() == 0 {
		t.Fatalf("TLS port %d, want a free one other than the taken %d", s.TLSPort(), taken)
	}
	if got := infoPID(t, s); got != s.PID() {
		t.Fatalf("process_id %d, want %d", got, s.PID())
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TLSPort())), time.Second)
	if err != nil {
		t.Fatalf("TLS port does not accept: %v", err)
	}
	c.Close()
}

// tlsArgs writes a self-signed certificate for 127.0.0.1 into a temporary
// directory and returns the redis-server arguments that use it.
func tlsArgs(t *testing.T) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--tls-cert-file", cert, "--tls-key-file", keyf, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"}
}

// TestStartClusterSkipsTakenPorts: the first node's port is answered by
// another program, the second node's bus port (port+10000) is taken. Every
// node of the cluster must still be a process StartCluster launched, on
// other ports.
func TestStartClusterSkipsTakenPorts(t *testing.T) {
	needRedis(t)
	fake, _, _ := fakeRedis(t, "127.0.0.1:0")
	for fake > MaxClusterPort {
		fake, _, _ = fakeRedis(t, "127.0.0.1:0")
	}
	// A port whose bus port is held by a plain listener.
	pp := newPortPicker()
	busTaken, err := pp.pick()
	if err != nil {
		t.Fatal(err)
	}
	bl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(busTaken+10000)))
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	var mu sync.Mutex
	handed := []int{fake, busTaken}
	pick := func() (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(handed) == 0 {
			return 0, nil
		}
		p := handed[0]
		handed = handed[1:]
		return p, nil
	}
	c, err := StartCluster(context.Background(), &ClusterOptions{pick: pick})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range c.Nodes() {
		if n.Port() == fake || n.Port() == busTaken {
			t.Errorf("node on taken port %d", n.Port())
		}
		if got := infoPID(t, n); got != n.PID() {
			t.Errorf("node %s reports process_id %d, want %d", n.Addr(), got, n.PID())
		}
		if info, err := n.Do("CLUSTER", "INFO"); err != nil || !strings.Contains(info, "cluster_state:ok") {
			t.Errorf("CLUSTER INFO on %s = %q, %v", n.Addr(), info, err)
		}
	}
	mu.Lock()
	left := len(handed)
	mu.Unlock()
	if left != 0 {
		t.Errorf("%d taken ports never handed out", left)
	}
}
