package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/redis/rueidis"
)

func TestTLSServer(t *testing.T) {
	s := StartTLS(t, &Options{Args: []string{"--requirepass", "sekrit"}})
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:  []string{s.TLSAddr()},
		Password:     "sekrit",
		TLSConfig:    s.ClientConfig(),
		DisableCache: true,
	})
	if err != nil {
		t.Fatalf("rueidis over TLS: %v", err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}
	// The plain port still serves the plumbing, on the same data.
	if got, err := s.Do("GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET on the plain port = %q, %v; want v", got, err)
	}

	// A client that does not trust the test CA is refused during the
	// handshake; so is one that trusts another test's CA.
	for name, cfg := range map[string]*tls.Config{
		"system roots": {MinVersion: tls.VersionTLS12},
		"other CA":     NewCA(t).ClientConfig(),
	} {
		_, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress: []string{s.TLSAddr()}, Password: "sekrit", TLSConfig: cfg,
			DisableCache: true,
		})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: NewClient error = %v, want a certificate error", name, err)
		}
	}
}

func TestSetUserAndInfo(t *testing.T) {
	s := Start(t, nil)
	s.SetUser("app", "on", ">pw", "~app:*", "+@all")
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{s.Addr()}, Username: "app", Password: "pw", DisableCache: true,
	})
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("app:1").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET app:1 as app: %v", err)
	}
	if err := c.Do(ctx, c.B().Set().Key("other").Value("v").Build()).Error(); err == nil {
		t.Fatal("SET other as app succeeded; the ACL should refuse it")
	}
	n := s.Info("stats", "total_connections_received")
	if n == "" || n == "0" {
		t.Fatalf("total_connections_received = %q after connecting", n)
	}
}

func TestCAPEM(t *testing.T) {
	ca := NewCA(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Fatalf("PEM() = %q: no certificate in it", ca.PEM())
	}
	if !pool.Equal(ca.ClientConfig().RootCAs) {
		t.Error("the pool read from PEM() differs from ClientConfig's RootCAs")
	}
}
