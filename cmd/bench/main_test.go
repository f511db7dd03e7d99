package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/bench"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parse([]string{"--help"}, noEnv, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parse(--help) error = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"scenarios", "keys", "ops", "duration", "zipf-theta", "workload", "mix", "trace",
		"no-traces", "trace-limit", "sizes", "goroutines", "value-size", "write-rate", "processes", "stampede-goroutines", "origin-delay",
		"redis", "redis-cluster", "redis-user", "redis-password", "redis-tls-ca", "no-redis", "out", "seed", "quick",
		"trace-sizes", "memory-policies", "sim-policies", "disk-replay"} {
		if !strings.Contains(errOut.String(), "-"+f+" ") && !strings.Contains(errOut.String(), "-"+f+"\n") {
			t.Errorf("--help does not document -%s", f)
		}
	}
}

func TestHelpDefinesEveryWorkload(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parse([]string{"--help"}, noEnv, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, w := range []string{"zipfian: ", "scrambled: ", "uniform: ", "hotspot: "} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("--help does not define the workload %q", strings.TrimSuffix(w, ": "))
		}
	}
}

func TestParse(t *testing.T) {
	cfg, err := parse([]string{"--scenarios", "peers, hitratio", "--workload", "zipfian,uniform", "--trace", "a.lis,b.bin:int64",
		"--zipf-theta", "0.8", "--duration", "3s", "--seed", "9"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Scenarios, ",") != "peers,hitratio" || strings.Join(cfg.Workloads, ",") != "zipfian,uniform" ||
		strings.Join(cfg.Traces, ",") != "a.lis,b.bin:int64" || cfg.Theta != 0.8 || cfg.Duration != 3*time.Second || cfg.Seed != 9 {
		t.Errorf("parse gave %+v", cfg)
	}
	if cfg.Traces == nil || cfg.Keys != bench.DefaultKeys {
		t.Errorf("Traces = %v, Keys = %d", cfg.Traces, cfg.Keys)
	}

	// --quick leaves the sizes it shrinks unset, but keeps what was given.
	cfg, err = parse([]string{"--quick", "--keys", "500"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keys != 500 || cfg.Ops != 0 || cfg.Duration != 0 || cfg.Sizes != "" {
		t.Errorf("--quick --keys 500 gave keys %d ops %d duration %v sizes %q", cfg.Keys, cfg.Ops, cfg.Duration, cfg.Sizes)
	}

	cfg, err = parse([]string{"--memory-policies", "lru, 2q", "--sim-policies", "arc", "--trace-sizes", "1000,5%", "--disk-replay", "all"}, noEnv, &bytes.Buffer{})
	if err != nil || strings.Join(cfg.MemoryPolicies, ",") != "lru,2q" || strings.Join(cfg.SimPolicies, ",") != "arc" ||
		cfg.TraceSizes != "1000,5%" || cfg.DiskReplay != "all" {
		t.Errorf("hit-ratio flags gave %+v, %v", cfg, err)
	}

	cfg, err = parse([]string{"--no-traces"}, noEnv, &bytes.Buffer{})
	if err != nil || cfg.Traces == nil || len(cfg.Traces) != 0 {
		t.Errorf("--no-traces gave Traces %#v, %v; want an empty, non-nil list", cfg.Traces, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"unknown flag", []string{"--nope"}, errUsage},
		{"bad duration", []string{"--duration", "soon"}, errUsage},
		{"stray argument", []string{"extra"}, errUsage},
		{"trace and no-traces", []string{"--trace", "a.lis", "--no-traces"}, bench.ErrConfig},
	}
	for _, tt := range tests {
		if _, err := parse(tt.args, noEnv, &bytes.Buffer{}); !errors.Is(err, tt.want) {
			t.Errorf("%s: parse error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"--scenarios", "restart,latency"}, noEnv, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "latency") {
		t.Errorf("run(--scenarios restart,latency) error = %v, want bench.ErrConfig naming the unknown scenario", err)
	}
	err = run(t.Context(), []string{"--processes", "-1", "--no-redis"}, noEnv, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "processes") {
		t.Errorf("run(--processes -1) error = %v, want bench.ErrConfig naming the flag", err)
	}
	err = run(t.Context(), []string{"--zipf-theta", "1.5", "--no-redis"}, noEnv, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "zipf-theta") {
		t.Errorf("run(--zipf-theta 1.5) error = %v, want bench.ErrConfig naming the flag", err)
	}
}

// noEnv is an empty environment.
func noEnv(string) string { return "" }

func TestParseRedisFlags(t *testing.T) {
	env := func(k string) string {
		if k == bench.PasswordEnv {
			return "from-env"
		}
		return ""
	}
	tests := []struct {
		name     string
		args     []string
		password string
	}{
		{"flag", []string{"--redis", "127.0.0.1:1", "--redis-password", "from-flag"}, "from-flag"},
		{"environment", []string{"--redis", "127.0.0.1:1"}, "from-env"},
		{"no --redis: environment unused", []string{"--redis-cluster"}, ""},
	}
	for _, tt := range tests {
		cfg, err := parse(tt.args, env, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := string(cfg.RedisPassword); got != tt.password {
			t.Errorf("%s: password %q, want %q", tt.name, got, tt.password)
		}
	}
	cfg, err := parse([]string{"--redis", "127.0.0.1:1,127.0.0.1:2", "--redis-user", "app", "--redis-tls-ca", "ca.pem"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis != "127.0.0.1:1,127.0.0.1:2" || cfg.RedisUser != "app" || cfg.RedisTLSCA != "ca.pem" || cfg.RedisCluster {
		t.Errorf("parse gave Redis %q, user %q, CA %q, cluster %v", cfg.Redis, cfg.RedisUser, cfg.RedisTLSCA, cfg.RedisCluster)
	}
	// The environment's password is never a flag default, so --help
	// cannot show it.
	var help bytes.Buffer
	if _, err := parse([]string{"--help"}, env, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "from-env") {
		t.Errorf("--help shows the password from %s", bench.PasswordEnv)
	}
}
