package tracking

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// failFastBound is how long New may take to refuse a configuration. The
// refusals measured take a few milliseconds; the bound leaves room for a
// loaded machine, and is far below the background loop's first retries.
const failFastBound = 2 * time.Second

// prefixesN returns n non-overlapping prefixes.
func prefixesN(n int) []string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("p%d:", i)
	}
	return p
}

// countDials wraps ro's dialing (TLS included) to count the connections New
// opens.
func countDials(ro *rueidis.ClientOption, n *atomic.Int64) {
	ro.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		n.Add(1)
		if cfg != nil {
			return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
		}
		return d.DialContext(ctx, "tcp", addr)
	}
}

// New refuses wrong credentials, unknown users and TLS mismatches with
// ErrRefused, after one dial (two for a plain client at a TLS port: the
// second asks whether it speaks TLS), however many prefixes it tracks and
// with or without ConnectInBackground. It refused them only with one or two
// prefixes before: with three and NOLOOP, CLIENT TRACKING has 11 arguments,
// which Redis refuses from an unauthenticated client by closing the
// connection, and rueidis reported the EOF instead of the WRONGPASS.
func TestFailFastRefused(t *testing.T) {
	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", authPassword}})
	acl := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + authPassword}})
	acl.SetUser("app", "on", ">"+authPassword, "~*", "&*", "+@all")
	tl := redistest.StartTLS(t, nil)
	other := redistest.NewCA(t)

	tests := []struct {
		name  string
		srv   *redistest.Server
		ro    rueidis.ClientOption
		dials int64  // connections New may open
		want  string // in the error text
		// serverCount counts connections at the server rather than at
		// the dialer: the default dialer's own TLS handshake is tested.
		serverCount bool
	}{
		{"wrong password", pass, rueidis.ClientOption{InitAddress: []string{pass.Addr()}, Password: "wrong"}, 1, "WRONGPASS", false},
		{"no password", pass, rueidis.ClientOption{InitAddress: []string{pass.Addr()}}, 1, "NOAUTH", false},
		{"unknown user", acl, rueidis.ClientOption{InitAddress: []string{acl.Addr()}, Username: "nobody", Password: authPassword}, 1, "WRONGPASS", false},
		{"user with a wrong password", acl, rueidis.ClientOption{InitAddress: []string{acl.Addr()}, Username: "app", Password: "wrong"}, 1, "WRONGPASS", false},
		{"plain client at a TLS port", tl.Server, rueidis.ClientOption{InitAddress: []string{tl.TLSAddr()}}, 2, "speaks TLS", false},
		{"TLS client at a plain port", tl.Server, rueidis.ClientOption{InitAddress: []string{tl.Addr()}, TLSConfig: tl.ClientConfig()}, 2, "plain RESP, not TLS", true},
		{"untrusted CA", tl.Server, rueidis.ClientOption{InitAddress: []string{tl.TLSAddr()}, TLSConfig: other.ClientConfig()}, 1, "certificate", false},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 3, 8} {
			for _, bg := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%d prefixes/background=%v", tt.name, n, bg), func(t *testing.T) {
					ro := tt.ro
					var dials atomic.Int64
					before := 0
					if tt.serverCount {
						before = connections(t, tt.srv)
					} else {
						countDials(&ro, &dials)
					}
					start := time.Now()
					c, err := New(t.Context(), &Options{Redis: &ro, Prefixes: prefixesN(n), NoLoop: true,
						ConnectInBackground: bg, Logger: slog.New(slog.DiscardHandler)})
					took := time.Since(start)
					if c != nil {
						c.Close()
					}
					if tt.serverCount {
						// Minus the INFO connection that counts them.
						dials.Store(int64(connections(t, tt.srv) - before - 1))
					}
					t.Logf("%v after %v, %d dials", err, took, dials.Load())
					if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
						t.Fatalf("New = %v, want ErrRefused saying %q", err, tt.want)
					}
					if strings.Contains(err.Error(), authPassword) {
						t.Fatalf("the error text carries the password: %v", err)
					}
					if took > failFastBound {
						t.Errorf("New took %v to refuse, want <= %v", took, failFastBound)
					}
					if d := dials.Load(); d > tt.dials {
						t.Errorf("New dialed %d times, want <= %d", d, tt.dials)
					}
				})
			}
		}
	}
}

// Addresses no dial could reach are refused before dialing, with
// ErrInvalidOptions, even with ConnectInBackground (which used to retry
// them for ever).
func TestFailFastMalformedAddress(t *testing.T) {
	for _, addrs := range [][]string{{"127.0.0.1"}, {":99999"}, {""}, {"garbage"}, {"127.0.0.1:0"},
		{"redis://127.0.0.1:6379"}, {":6379"}, {"127.0.0.1:port"}, {}} {
		for _, bg := range []bool{false, true} {
			t.Run(fmt.Sprintf("%q/background=%v", addrs, bg), func(t *testing.T) {
				start := time.Now()
				c, err := New(t.Context(), &Options{Redis: &rueidis.ClientOption{InitAddress: addrs},
					Prefixes: prefixesN(3), ConnectInBackground: bg, Logger: slog.New(slog.DiscardHandler)})
				took := time.Since(start)
				if c != nil {
					c.Close()
				}
				if !errors.Is(err, ErrInvalidOptions) {
					t.Fatalf("New = %v, want ErrInvalidOptions", err)
				}
				if took > failFastBound {
					t.Errorf("New took %v, want <= %v", took, failFastBound)
				}
			})
		}
	}
}

// The dialer's own check passes the right credentials, with many prefixes,
// through rotation by AuthCredentialsFn, and to a server without a
// password.
func TestFailFastAccepts(t *testing.T) {
	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", authPassword}})
	open := redistest.Start(t, nil)
	tests := []struct {
		name string
		ro   rueidis.ClientOption
	}{
		{"password", rueidis.ClientOption{InitAddress: []string{pass.Addr()}, Password: authPassword}},
		{"credentials function", rueidis.ClientOption{InitAddress: []string{pass.Addr()},
			AuthCredentialsFn: func(rueidis.AuthCredentialsContext) (rueidis.AuthCredentials, error) {
				return rueidis.AuthCredentials{Password: authPassword}, nil
			}}},
		{"no password needed", rueidis.ClientOption{InitAddress: []string{open.Addr()}}},
		{"a password a passwordless server ignores", rueidis.ClientOption{InitAddress: []string{open.Addr()}, Password: "any"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ro := tt.ro
			c, err := New(t.Context(), &Options{Redis: &ro, Prefixes: prefixesN(8), NoLoop: true})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			if err := c.Set(t.Context(), "p3:k", Item{Value: []byte("v")}, []byte("v"), time.Minute); err != nil {
				t.Fatalf("Set: %v", err)
			}
		})
	}
}
