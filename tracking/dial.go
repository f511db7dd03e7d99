package tracking

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"
)

// checkAddresses refuses Redis addresses that no dial could reach, before
// anything is dialed: a missing port ("127.0.0.1"), a port out of range
// (":99999"), an empty host or address, a URL where an address belongs. With
// a custom DialCtxFn or DialFn the address is the dialer's business (a Unix
// socket path, say) and only an empty one is refused. Sentinel addresses
// are checked the same way.
func checkAddresses(ro *rueidis.ClientOption) error {
	if len(ro.InitAddress) == 0 {
		return fmt.Errorf("%w: Redis.InitAddress is empty", ErrInvalidOptions)
	}
	custom := ro.DialCtxFn != nil || ro.DialFn != nil
	for _, a := range ro.InitAddress {
		if a == "" {
			return fmt.Errorf("%w: empty address in Redis.InitAddress", ErrInvalidOptions)
		}
		if custom {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("%w: Redis.InitAddress %q is not host:port (for a URL, use rueidis.ParseURL): %v",
				ErrInvalidOptions, a, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: Redis.InitAddress %q: port %q is not a number from 1 to 65535",
				ErrInvalidOptions, a, port)
		}
		if host == "" {
			return fmt.Errorf("%w: Redis.InitAddress %q has no host", ErrInvalidOptions, a)
		}
	}
	return nil
}

// refusedCredentials is what the dialer returns when the server answered
// its AUTH (or, without credentials, its PING) with a refusal. It carries
// the server's reply, never the credentials.
type refusedCredentials struct {
	addr, reply string
}

func (e *refusedCredentials) Error() string {
	return fmt.Sprintf("%s refused the credentials: %s", e.addr, e.reply)
}

// silentClose is what the dialer returns when the server closed the new
// connection (or reset it) without answering a byte: a TLS server sent
// plain text does that, and so does a proxy with nothing behind it.
type silentClose struct {
	addr string
	err  error
}

func (e *silentClose) Error() string {
	return fmt.Sprintf("%s closed the connection without a reply: %v", e.addr, e.err)
}

func (e *silentClose) Unwrap() error { return e.err }

// preflightDial returns a DialCtxFn that dials as ro would and then asks
// the server, alone on the new connection, whether it accepts the
// credentials: AUTH user password (or PING without credentials), and one
// reply read back before the connection is handed to rueidis.
//
// Why: rueidis sends its connection set-up as one pipeline — HELLO 3 AUTH …,
// then CLIENT TRACKING ON BCAST PREFIX … — and Redis refuses a command of
// more than 10 arguments from a client that has not authenticated: it
// answers "Protocol error: unauthenticated multibulk length" and closes the
// connection. rueidis then turns every reply of the pipeline, the WRONGPASS
// that came first included, into the EOF (pipe.go, syncDoMulti). Three
// tracked prefixes with NOLOOP make 11 arguments, so a wrong password looked
// like an unreachable server: New connected in the background for ever and
// the server logged the failures. Authenticating first makes the refusal
// arrive on its own, on every connection rueidis opens (every cluster node,
// every reconnect, every dedicated connection), at the cost of one round
// trip per new connection.
//
// Sentinel mode keeps rueidis's own dialing: its sentinel connections carry
// other credentials than the data connections, through the same dialer.
func preflightDial(ro *rueidis.ClientOption) dialFunc {
	inner := baseDial(ro)
	user, pass, credsFn := ro.Username, ro.Password, ro.AuthCredentialsFn
	return func(ctx context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		conn, err := inner(ctx, dst, d, cfg)
		if err != nil {
			return nil, err
		}
		u, p := user, pass
		if credsFn != nil {
			cr, err := credsFn(rueidis.AuthCredentialsContext{Address: conn.RemoteAddr()})
			if err != nil {
				conn.Close()
				return nil, err
			}
			u, p = cr.Username, cr.Password
		}
		timeout := dialTimeout(d)
		if err := preflight(ctx, conn, dst, u, p, timeout); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

type dialFunc = func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error)

// baseDial returns how ro dials: its DialCtxFn, its DialFn, or rueidis's
// default (TCP, then TLS with the given config if there is one), with the
// handshake watched by tlsHandshake.
func baseDial(ro *rueidis.ClientOption) dialFunc {
	switch {
	case ro.DialCtxFn != nil:
		return ro.DialCtxFn
	case ro.DialFn != nil:
		fn := ro.DialFn
		return func(_ context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
			return fn(dst, d, cfg)
		}
	}
	return func(ctx context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		conn, err := d.DialContext(ctx, "tcp", dst)
		if err != nil || cfg == nil {
			return conn, err
		}
		if cfg.ServerName == "" {
			// As tls.Dialer does: verify the host the address names.
			host, _, _ := net.SplitHostPort(dst)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		if err := tlsHandshake(ctx, tc, dst, d); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

// plainProbeDelay is how long a TLS handshake may go unanswered before a
// second connection asks whether the server speaks plain RESP. A handshake
// with a live server takes a round trip or two; a plain Redis sent a
// ClientHello waits silently for a newline its inline parser never finds
// (the NUL bytes of the hello stop it), until the dial times out.
const plainProbeDelay = 200 * time.Millisecond

// plainServer is what the dialer returns when a TLS handshake went
// unanswered and the address answered plain RESP instead.
type plainServer struct{ addr string }

func (e *plainServer) Error() string {
	return fmt.Sprintf("%s speaks plain RESP, not TLS", e.addr)
}

// tlsHandshake runs tc's handshake within the dialer's timeout. If the
// server has said nothing after plainProbeDelay, it asks a second
// connection whether the address speaks plain RESP, and gives up with
// *plainServer if it does.
func tlsHandshake(ctx context.Context, tc *tls.Conn, addr string, d *net.Dialer) error {
	timeout := dialTimeout(d)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tc.HandshakeContext(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(plainProbeDelay):
	}
	plain := make(chan bool, 1)
	go func() { plain <- speaksPlain(ctx, addr, d) }()
	for {
		select {
		case err := <-done:
			return err
		case yes := <-plain:
			if !yes {
				plain = nil // a TLS server, or no answer: wait for the handshake
				continue
			}
			cancel()
			<-done
			return &plainServer{addr: addr}
		}
	}
}

// speaksPlain reports whether addr answers a plain-text PING with a RESP
// reply (+PONG, or an error such as NOAUTH).
func speaksPlain(ctx context.Context, addr string, d *net.Dialer) bool {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return false
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return false
	}
	return b[0] == '+' || b[0] == '-'
}

// maxPreflightReply bounds the reply line preflight reads.
const maxPreflightReply = 4096

// preflight sends AUTH (or PING) on conn and reads its one reply.
func preflight(ctx context.Context, conn net.Conn, addr, user, pass string, timeout time.Duration) error {
	var cmd []string
	switch {
	case pass != "" || user != "":
		// The two-argument form, as rueidis's HELLO … AUTH sends it: a
		// default user without a password accepts any.
		cmd = []string{"AUTH", orDefault(user, "default"), pass}
	default:
		cmd = []string{"PING"}
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "*%d\r\n", len(cmd))
	for _, a := range cmd {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(req.Bytes()); err != nil {
		return err
	}
	// One command, one reply, and nothing else is sent before the next
	// command (RESP2 until HELLO 3: no pushes), so reading ahead loses
	// nothing.
	line := make([]byte, 0, 64)
	buf := make([]byte, 512)
	for !bytes.Contains(line, []byte("\r\n")) {
		n, err := conn.Read(buf)
		line = append(line, buf[:n]...)
		if err != nil {
			if len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
				return &silentClose{addr: addr, err: err}
			}
			return err
		}
		if len(line) > maxPreflightReply {
			return fmt.Errorf("%s: reply to %s longer than %d bytes", addr, cmd[0], maxPreflightReply)
		}
	}
	reply := string(line[:bytes.Index(line, []byte("\r\n"))])
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	if !strings.HasPrefix(reply, "-") {
		return nil
	}
	msg := strings.TrimPrefix(reply, "-")
	switch {
	case strings.HasPrefix(msg, "WRONGPASS"), strings.HasPrefix(msg, "NOAUTH"),
		strings.HasPrefix(msg, "ERR invalid password"), strings.HasPrefix(msg, "ERR AUTH"):
		return &refusedCredentials{addr: addr, reply: msg}
	}
	// Anything else ("max number of clients reached", a server still
	// starting) is the server's state, not the configuration: it fails
	// the connection as unavailable.
	return fmt.Errorf("%s: %s", addr, msg)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// speaksTLS reports whether addr completes a TLS handshake when dialed
// with dial: asked after a plain-text connection was closed without a
// reply, it tells a TLS port (the client forgot TLSConfig) from a proxy with
// nothing behind it. The certificate is not checked — nothing is sent over
// the connection, which is closed at once; the question is only whether
// the peer speaks TLS. A dialer that ignores the TLS config it is given
// cannot tell: false.
func speaksTLS(ctx context.Context, dial dialFunc, addr string, d net.Dialer) bool {
	d.Timeout = dialTimeout(&d)
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	probe := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // #nosec G402 -- only asks whether the peer speaks TLS
	conn, err := dial(ctx, addr, &d, probe)
	if err != nil {
		return false
	}
	defer conn.Close()
	tc, ok := conn.(*tls.Conn)
	return ok && tc.HandshakeContext(ctx) == nil
}

// classifyConnectError maps rueidis.NewClient's error: the server refusing
// the credentials or the TLS set-up is ErrRefused (retrying will not help),
// a plain client at a TLS port too; anything else stays unavailable.
func classifyConnectError(ctx context.Context, ro *rueidis.ClientOption, err error) error {
	var rc *refusedCredentials
	var sc *silentClose
	var ps *plainServer
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &rc):
		return fmt.Errorf("%w: %v", ErrRefused, rc)
	case errors.As(err, &ps):
		return fmt.Errorf("%w: Redis.TLSConfig is set but %v", ErrRefused, ps)
	case errors.As(err, &rh):
		return fmt.Errorf("%w: Redis.TLSConfig is set but the server does not speak TLS: %v", ErrRefused, err)
	case refused(err):
		return fmt.Errorf("%w: %v", ErrRefused, err)
	case errors.As(err, &sc) && ro.TLSConfig == nil && speaksTLS(ctx, baseDial(ro), sc.addr, ro.Dialer):
		return fmt.Errorf("%w: %s speaks TLS but Redis.TLSConfig is nil", ErrRefused, sc.addr)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// dialTimeout is how long a dial with d may take: its Timeout, or
// rueidis's default when it has none.
func dialTimeout(d *net.Dialer) time.Duration {
	if d.Timeout <= 0 {
		return rueidis.DefaultDialTimeout
	}
	return d.Timeout
}
