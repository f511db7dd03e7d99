package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/bench"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parse([]string{"--help"}, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parse(--help) error = %v, want flag.ErrHelp", err)
	}
	for _, f := range []string{"scenarios", "keys", "ops", "duration", "zipf-theta", "workload", "mix", "trace",
		"no-traces", "trace-limit", "sizes", "goroutines", "value-size", "write-rate", "processes", "stampede-goroutines", "origin-delay",
		"redis", "no-redis", "out", "seed", "quick"} {
		if !strings.Contains(errOut.String(), "-"+f+" ") && !strings.Contains(errOut.String(), "-"+f+"\n") {
			t.Errorf("--help does not document -%s", f)
		}
	}
}

func TestParse(t *testing.T) {
	cfg, err := parse([]string{"--scenarios", "peers, hitratio", "--workload", "zipfian,uniform", "--trace", "a.lis,b.bin:int64",
		"--zipf-theta", "0.8", "--duration", "3s", "--seed", "9"}, &bytes.Buffer{})
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
	cfg, err = parse([]string{"--quick", "--keys", "500"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keys != 500 || cfg.Ops != 0 || cfg.Duration != 0 || cfg.Sizes != "" {
		t.Errorf("--quick --keys 500 gave keys %d ops %d duration %v sizes %q", cfg.Keys, cfg.Ops, cfg.Duration, cfg.Sizes)
	}

	cfg, err = parse([]string{"--no-traces"}, &bytes.Buffer{})
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
		if _, err := parse(tt.args, &bytes.Buffer{}); !errors.Is(err, tt.want) {
			t.Errorf("%s: parse error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"--scenarios", "restart,latency"}, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "latency") {
		t.Errorf("run(--scenarios restart,latency) error = %v, want bench.ErrConfig naming the unknown scenario", err)
	}
	err = run(t.Context(), []string{"--processes", "-1", "--no-redis"}, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "processes") {
		t.Errorf("run(--processes -1) error = %v, want bench.ErrConfig naming the flag", err)
	}
	err = run(t.Context(), []string{"--zipf-theta", "1.5", "--no-redis"}, &out, &errOut)
	if !errors.Is(err, bench.ErrConfig) || !strings.Contains(err.Error(), "zipf-theta") {
		t.Errorf("run(--zipf-theta 1.5) error = %v, want bench.ErrConfig naming the flag", err)
	}
}
