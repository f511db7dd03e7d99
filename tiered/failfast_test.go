package tiered

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tracking"
)

// openRefusalBound is how long Open may take to refuse a configuration:
// the refusals take milliseconds (a plain-text server behind a TLS client
// about 200ms, the wait before asking it in plain text).
const openRefusalBound = 2 * time.Second

// routesN returns n Memory|Redis routes, so n tracked prefixes.
func routesN(n int) []Route {
	rs := make([]Route, n)
	for i := range rs {
		rs[i] = Route{Prefix: fmt.Sprintf("r%d:", i), Tiers: Memory | Redis}
	}
	return rs
}

func serverConns(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	n, err := strconv.Atoi(srv.Info("stats", "total_connections_received"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Open refuses wrong credentials, unknown users and TLS mismatches with
// ErrRefused (and tracking.ErrRefused), and malformed addresses with
// ErrConfig before dialing, at once and after one dial (two when a plain
// client meets a TLS port, or a TLS client a plain one: the second asks
// how the port speaks), whatever the number of tracked prefixes. With
// three or more prefixes a wrong password used to give a nil error, one
// WARN with EOF, then "not connected yet" for ever; a TLS mismatch and a
// malformed address were retried for ever.
func TestOpenFailsFast(t *testing.T) {
	const pw = "open-secret"
	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", pw}})
	acl := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + pw}})
	acl.SetUser("app", "on", ">"+pw, "~*", "&*", "+@all")
	tl := redistest.StartTLS(t, nil)
	other := redistest.NewCA(t)
	addr := func(a string) rueidis.ClientOption { return rueidis.ClientOption{InitAddress: []string{a}} }
	with := func(o rueidis.ClientOption, f func(*rueidis.ClientOption)) rueidis.ClientOption { f(&o); return o }

	tests := []struct {
		name  string
		ro    rueidis.ClientOption
		want  error
		srv   *redistest.Server // counts connections at the server; nil: at the dialer
		dials int
	}{
		{"wrong password", with(addr(pass.Addr()), func(o *rueidis.ClientOption) { o.Password = "wrong" }), ErrRefused, nil, 1},
		{"no password", addr(pass.Addr()), ErrRefused, nil, 1},
		{"unknown user", with(addr(acl.Addr()), func(o *rueidis.ClientOption) { o.Username, o.Password = "nobody", pw }), ErrRefused, nil, 1},
		{"plain client, TLS port", addr(tl.TLSAddr()), ErrRefused, nil, 2},
		{"TLS client, plain port", with(addr(tl.Addr()), func(o *rueidis.ClientOption) { o.TLSConfig = tl.ClientConfig() }), ErrRefused, tl.Server, 2},
		{"untrusted CA", with(addr(tl.TLSAddr()), func(o *rueidis.ClientOption) { o.TLSConfig = other.ClientConfig() }), ErrRefused, nil, 1},
		{"no port", addr("127.0.0.1"), ErrConfig, nil, 0},
		{"port out of range", addr(":99999"), ErrConfig, nil, 0},
		{"empty address", addr(""), ErrConfig, nil, 0},
		{"garbage", addr("not an address"), ErrConfig, nil, 0},
		{"a URL", addr("redis://127.0.0.1:6379"), ErrConfig, nil, 0},
		{"no address", rueidis.ClientOption{}, ErrConfig, nil, 0},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 3, 8} {
			t.Run(fmt.Sprintf("%s/%d prefixes", tt.name, n), func(t *testing.T) {
				ro := tt.ro
				var dials atomic.Int64
				before := 0
				switch {
				case tt.srv != nil:
					before = serverConns(t, tt.srv)
				case tt.dials > 0:
					// Counting at the dialer; the malformed rows keep
					// rueidis's own dialer, whose addresses are checked.
					ro.DialCtxFn = func(ctx context.Context, a string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
						dials.Add(1)
						if cfg != nil {
							return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", a)
						}
						return d.DialContext(ctx, "tcp", a)
					}
				}
				start := time.Now()
				c, err := Open(t.Context(), &Options{Redis: &ro, Routes: routesN(n), Logger: slog.New(slog.DiscardHandler)})
				took := time.Since(start)
				if c != nil {
					c.Close()
				}
				if tt.srv != nil {
					dials.Store(int64(serverConns(t, tt.srv) - before - 1)) // minus the INFO that counts
				}
				t.Logf("%v in %v, %d dials", err, took, dials.Load())
				if !errors.Is(err, tt.want) {
					t.Fatalf("Open = %v, want %v", err, tt.want)
				}
				if tt.want == ErrRefused && !errors.Is(err, tracking.ErrRefused) {
					t.Errorf("Open = %v, want it to match tracking.ErrRefused too", err)
				}
				if strings.Contains(err.Error(), pw) {
					t.Errorf("the error carries the password: %v", err)
				}
				if took > openRefusalBound {
					t.Errorf("Open took %v, want <= %v", took, openRefusalBound)
				}
				if d := dials.Load(); d > int64(tt.dials) {
					t.Errorf("Open dialed %d times, want <= %d", d, tt.dials)
				}
			})
		}
	}
}
