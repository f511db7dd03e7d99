package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestRunReducedSuiteOnCluster runs every scenario of the reduced suite
// against a private Redis Cluster started by Run (--redis-cluster), with
// the same checks as on one server: the herd's call counts across worker
// processes, warm restarts without origin calls, no stale read beyond the
// invalidation lag, and a report that says it ran on a cluster.
func TestRunReducedSuiteOnCluster(t *testing.T) {
	redistest.Binary(t)
	cfg := smallConfig(t)
	cfg.RedisCluster = true
	var out, errOut bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	if want := "Redis Cluster (3 primaries)"; res.Host.RedisTopology != want || !strings.HasPrefix(res.Host.Redis, want+", private, on 127.0.0.1:") {
		t.Errorf("Host.Redis = %q, topology %q; want a private %s", res.Host.Redis, res.Host.RedisTopology, want)
	}
	checkSuite(t, cfg, res, out.String())
}

// TestRunExistingCluster passes a cluster's node addresses to --redis:
// rueidis finds the cluster, the report says so, and the preload spread
// keys over every primary (an MSET across slots would have failed).
func TestRunExistingCluster(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	cfg := smallConfig(t)
	cfg.Scenarios = []string{ScenarioPeers}
	cfg.Redis = strings.Join(cl.Addrs()[:2], ", ")
	cfg.Out = ""
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "Redis Cluster (3 primaries), existing, at " + strings.Join(cl.Addrs()[:2], ","); res.Host.Redis != want {
		t.Errorf("Host.Redis = %q, want %q", res.Host.Redis, want)
	}
	for _, p := range cl.Primaries() {
		if n, err := p.Do("DBSIZE"); err != nil || n == "0" {
			t.Errorf("DBSIZE on primary %s = %q, %v; want some preloaded keys on every primary", p.Addr(), n, err)
		}
	}
}

// TestRunWithPasswordNeverPrintsIt runs the reduced suite against a server
// that requires a password (--redis ADDR --redis-password), so every client
// the tool opens (peers, thermos, the staleness writer, the stampede's
// worker processes) must authenticate, then looks for the password in
// every output: stdout (tables and benchmark lines), stderr,
// results.json, report.html, and the error of a run with a wrong one.
func TestRunWithPasswordNeverPrintsIt(t *testing.T) {
	const password = "pw-4f9c2e7a-do-not-print"
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", password}})
	cfg := smallConfig(t)
	cfg.Redis = srv.Addr()
	cfg.RedisPassword = Secret(password)
	var out, errOut bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &errOut)
	if err != nil {
		if strings.Contains(err.Error(), password) {
			t.Errorf("the error reveals the password")
		}
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	if want := "single Redis, existing, at " + srv.Addr() + " (password)"; res.Host.Redis != want {
		t.Errorf("Host.Redis = %q, want %q", res.Host.Redis, want)
	}
	checkSuite(t, cfg, res, out.String())
	outputs := map[string]string{"stdout": out.String(), "stderr": errOut.String()}
	for _, f := range []string{"results.json", "report.html"} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, f))
		if err != nil {
			t.Fatal(err)
		}
		outputs[f] = string(b)
	}

	// A wrong password fails the run with an error that shows neither.
	bad := cfg
	bad.RedisPassword = Secret(password + "-wrong")
	bad.Scenarios, bad.Out = []string{ScenarioPeers}, ""
	out.Reset()
	errOut.Reset()
	err = Run(context.Background(), bad, &out, &errOut)
	if err == nil {
		t.Fatal("run with a wrong password succeeded")
	}
	outputs["wrong-password error"] = err.Error()
	outputs["wrong-password stdout"] = out.String() + errOut.String()
	// And a Config never formats or marshals it.
	outputs["%+v of Config"] = fmtConfig(cfg)
	for name, text := range outputs {
		if strings.Contains(text, password) {
			t.Errorf("%s contains the password", name)
		}
	}
}

// TestRunOverTLS runs the Redis scenarios that open every kind of client
// (peers, thermos and the stampede's worker processes) over TLS
// (--redis-tls-ca) as an ACL user (--redis-user) on a server whose default
// user is off, so a client without the user or the CA cannot work.
func TestRunOverTLS(t *testing.T) {
	const password = "tls-pw-8d1b"
	srv := redistest.StartTLS(t, nil)
	srv.SetUser("bench", "on", ">"+password, "~*", "&*", "+@all")
	srv.SetUser("default", "off")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CA.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := smallConfig(t)
	cfg.Scenarios = []string{ScenarioPeers, ScenarioStampede}
	cfg.Redis, cfg.RedisTLSCA, cfg.RedisUser, cfg.RedisPassword = srv.TLSAddr(), ca, "bench", Secret(password)
	var out, errOut bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	if want := "single Redis, existing, at " + srv.TLSAddr() + " (TLS, user bench, password)"; res.Host.Redis != want {
		t.Errorf("Host.Redis = %q, want %q", res.Host.Redis, want)
	}
	checkSuite(t, cfg, res, out.String())

	// Without the user the run fails: the tool does not fall back to the
	// default user.
	cfg.RedisUser, cfg.Scenarios = "", []string{ScenarioPeers}
	if err := Run(context.Background(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("run as the default user succeeded")
	}
	cfg.RedisUser = "bench"

	// Without the CA the handshake fails: the tool does not fall back to
	// plain TCP or to the system roots.
	other := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(other, redistest.NewCA(t).PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.RedisTLSCA = other
	if err := Run(context.Background(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("run trusting another CA succeeded")
	}
}

// fmtConfig formats c every way a program might: fmt verbs, JSON, slog.
func fmtConfig(c Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v %+v %#v %s %q ", c, c, c, c.RedisPassword, c.RedisPassword)
	j, _ := json.Marshal(c)
	b.Write(j)
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "cfg", c, "password", c.RedisPassword)
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "password", c.RedisPassword)
	return b.String()
}

func TestSecretNeverFormats(t *testing.T) {
	const pw = "s3cret-value"
	got := fmtConfig(Config{RedisPassword: pw, Redis: "127.0.0.1:1"})
	if strings.Contains(got, pw) {
		t.Errorf("a formatted Config shows its password: %s", got)
	}
	if !strings.Contains(got, redacted) {
		t.Errorf("a formatted Config does not say the password was redacted: %s", got)
	}
}

func TestRedisConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"cluster and redis", Config{RedisCluster: true, Redis: "127.0.0.1:1"}},
		{"cluster and no-redis", Config{RedisCluster: true, NoRedis: true}},
		{"password without redis", Config{RedisPassword: "x"}},
		{"user without redis", Config{RedisUser: "app", RedisCluster: true}},
		{"tls without redis", Config{RedisTLSCA: notPEM}},
		{"address without port", Config{Redis: "127.0.0.1"}},
		{"only commas", Config{Redis: " , "}},
		{"missing CA file", Config{Redis: "127.0.0.1:1", RedisTLSCA: filepath.Join(dir, "none.pem")}},
		{"CA file without PEM", Config{Redis: "127.0.0.1:1", RedisTLSCA: notPEM}},
	}
	for _, tt := range tests {
		tt.cfg.Scenarios = []string{ScenarioPeers}
		if err := Run(context.Background(), tt.cfg, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Run error = %v, want ErrConfig", tt.name, err)
		}
	}
}
