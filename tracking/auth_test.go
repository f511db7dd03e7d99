package tracking

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

const authPassword = "auth-test-secret"

// authSetup is one way of reaching a protected server: the options a client
// needs, and the server's plumbing.
type authSetup struct {
	name string
	srv  *redistest.Server
	opts rueidis.ClientOption // InitAddress, credentials, TLS
}

// authSetups starts a server with requirepass, one with an ACL user (and
// the default user disabled for clients that do not log in), and a TLS one
// with an ACL user.
func authSetups(t *testing.T) []authSetup {
	t.Helper()
	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", authPassword}})

	acl := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + authPassword}})
	acl.SetUser("app", "on", ">"+authPassword, "~t:*", "+@all", "-@admin")

	tl := redistest.StartTLS(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + authPassword}})
	tl.SetUser("app", "on", ">"+authPassword, "~t:*", "+@all", "-@admin")

	return []authSetup{
		{"requirepass", pass, rueidis.ClientOption{InitAddress: []string{pass.Addr()}, Password: authPassword}},
		{"acl-user", acl, rueidis.ClientOption{InitAddress: []string{acl.Addr()}, Username: "app", Password: authPassword}},
		{"tls+acl-user", tl.Server, rueidis.ClientOption{InitAddress: []string{tl.TLSAddr()}, Username: "app",
			Password: authPassword, TLSConfig: tl.ClientConfig()}},
	}
}

// Tracking works as usual through a password, an ACL user and TLS: fills,
// own writes, and another client's write invalidating the local entry.
func TestAuthCorePaths(t *testing.T) {
	for _, s := range authSetups(t) {
		t.Run(s.name, func(t *testing.T) {
			ro := s.opts
			c := newRedisCache(t, s.srv, &Options{Redis: &ro, Prefixes: []string{"t:"}})
			wo := s.opts
			wo.DisableCache = true
			w, err := rueidis.NewClient(wo)
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			defer w.Close()
			ctx := t.Context()

			if err := c.Set(ctx, "t:own", Item{Value: []byte("mine")}, []byte("mine"), time.Minute); err != nil {
				t.Fatalf("Set: %v", err)
			}
			set(t, w, "t:1", "v1")
			if it := fetchCached(t, c, "t:1"); string(it.Value) != "v1" {
				t.Fatalf("Fetch = %q, want v1", it.Value)
			}
			set(t, w, "t:1", "v2")
			waitFor(t, "invalidation of t:1", 5*time.Second, func() bool { _, _, ok := c.Get("t:1"); return !ok })
			if it := fetchCached(t, c, "t:1"); string(it.Value) != "v2" {
				t.Fatalf("Fetch after the write = %q, want v2", it.Value)
			}
			if got, err := s.srv.Do("GET", "t:own"); err != nil || got != "mine" {
				t.Fatalf("server holds t:own = %q, %v; want mine", got, err)
			}
		})
	}
}

// connections returns the server's total_connections_received.
func connections(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	n, err := strconv.Atoi(srv.Info("stats", "total_connections_received"))
	if err != nil {
		t.Fatalf("total_connections_received: %v", err)
	}
	return n
}

// maxRefusalConns bounds the connections a refused New may open: rueidis
// dials once (measured: 1 in every case); a retry loop would show dozens.
const maxRefusalConns = 3

// A wrong password, an unknown user and an untrusted certificate fail New at
// once (ErrRefused, even with ConnectInBackground), without a retry storm
// and without the secret in the error text.
func TestAuthRefusedQuickly(t *testing.T) {
	setups := authSetups(t)
	other := redistest.NewCA(t)
	tests := []struct {
		setup  int
		name   string
		change func(o *rueidis.ClientOption)
		want   string // in the error text
	}{
		{0, "wrong password", func(o *rueidis.ClientOption) { o.Password = "wrong-" + authPassword }, "WRONGPASS"},
		{0, "no password", func(o *rueidis.ClientOption) { o.Password = "" }, "NOAUTH"},
		{1, "unknown user", func(o *rueidis.ClientOption) { o.Username = "nobody" }, "WRONGPASS"},
		{2, "untrusted certificate", func(o *rueidis.ClientOption) { o.TLSConfig = other.ClientConfig() }, "certificate"},
		{2, "system roots", func(o *rueidis.ClientOption) { o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} }, "certificate"},
	}
	for _, tt := range tests {
		for _, background := range []bool{false, true} {
			s := setups[tt.setup]
			ro := s.opts
			tt.change(&ro)
			var dials atomic.Int64
			ro.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
				dials.Add(1)
				if cfg != nil {
					return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
				}
				return d.DialContext(ctx, "tcp", addr)
			}
			before := connections(t, s.srv)
			start := time.Now()
			var logs bytes.Buffer
			_, err := New(t.Context(), &Options{Redis: &ro, Prefixes: []string{"t:"}, ConnectInBackground: background,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			took := time.Since(start)
			conns := connections(t, s.srv) - before - 1 // minus the INFO connection itself
			t.Logf("%s/%s (background %v): error after %v, %d dials, %d connections counted by the server: %v",
				s.name, tt.name, background, took, dials.Load(), conns, err)
			switch {
			case !errors.Is(err, ErrRefused):
				t.Errorf("%s: New = %v, want ErrRefused", tt.name, err)
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("%s: error %q does not say %q", tt.name, err, tt.want)
			case strings.Contains(err.Error(), authPassword):
				t.Errorf("%s: error text leaks the password: %q", tt.name, err)
			case strings.Contains(logs.String(), authPassword):
				t.Errorf("%s: logs leak the password: %s", tt.name, logs.String())
			}
			if took > 2*time.Second {
				t.Errorf("%s: New took %v to fail, want < 2s", tt.name, took)
			}
			// The server does not count a connection whose TLS handshake
			// failed; the dialer counts every attempt.
			if n := max(dials.Load(), int64(conns)); n > maxRefusalConns {
				t.Errorf("%s: New opened %d connections, want <= %d (no retry storm)", tt.name, n, maxRefusalConns)
			}
		}
	}
}
