package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/cmd/bench/internal/trace"
)

// writeTextTrace writes keys as a text trace, one per line.
func writeTextTrace(t *testing.T, keys []uint64) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d\n", k)
	}
	p := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestThermosReplayExactHits replays a small trace through real
// tiered.Caches and checks the exact hit count, worked out by hand: K keys
// each read twice in a row (K misses, then K hits), then each once more (K
// hits when the cache holds them all: memory of 10·K entries, or a
// 10-entry memory over a disk that holds every key), for every memory
// policy.
func TestThermosReplayExactHits(t *testing.T) {
	const k = 100
	var keys []uint64
	for i := range uint64(k) {
		keys = append(keys, 1000+i, 1000+i)
	}
	for i := range uint64(k) {
		keys = append(keys, 1000+i)
	}
	path := writeTextTrace(t, keys)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if len(memoryPolicies()) < 2 {
		t.Fatalf("memory policies %v: want at least lru and 2q", memoryPolicyNames())
	}
	for _, pol := range memoryPolicies() {
		for _, c := range []struct {
			size int
			disk bool
		}{{10 * k, false}, {10, true}} {
			t.Run(fmt.Sprintf("%s/size=%d/disk=%v", pol, c.size, c.disk), func(t *testing.T) {
				s, err := newThermosSim(ctx, pol, c.size, c.disk, quiet)
				if err != nil {
					t.Fatal(err)
				}
				n, err := replayTrace(ctx, path, trace.Auto, 0, []*sim{s}, nil)
				if cerr := closeSims([]*sim{s}); err == nil {
					err = cerr
				}
				if err != nil {
					t.Fatal(err)
				}
				if n != 3*k || s.n != 3*k {
					t.Fatalf("replayed %d (sim saw %d) accesses, want %d", n, s.n, 3*k)
				}
				if s.hits != 2*k {
					t.Errorf("%s: %d hits, want exactly %d", s.name, s.hits, 2*k)
				}
			})
		}
	}
}

// TestRunRefusesWrongTraceFormat checks that the hit-ratio scenario
// refuses, before replaying anything, a trace whose named format its
// content contradicts (an int64 trace named int32 would replay as twice
// its accesses) and one whose format the content cannot settle.
func TestRunRefusesWrongTraceFormat(t *testing.T) {
	dir := t.TempDir()
	var i64, hashed []byte
	for i := range uint64(5000) {
		i64 = binary.BigEndian.AppendUint64(i64, i*i%977)
		hashed = binary.BigEndian.AppendUint64(hashed, (i%1000+1)*0x9E3779B97F4A7C15)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p64, ph := write("a.trace", i64), write("b.trace", hashed)
	for _, tr := range []string{p64 + ":int32", ph, write("odd.bin", []byte("\x00\x00\x00\x01\x00"))} {
		cfg := Config{Scenarios: []string{ScenarioHitRatio}, NoRedis: true, Traces: []string{tr}, Keys: 100, Ops: 100, Sizes: "10"}
		var out bytes.Buffer
		err := Run(context.Background(), cfg, &out, io.Discard)
		if !errors.Is(err, trace.ErrFormat) || !errors.Is(err, ErrConfig) {
			t.Errorf("trace %s: Run = %v, want ErrConfig and trace.ErrFormat", filepath.Base(tr), err)
		}
		if strings.Contains(out.String(), "hit ratio, ") {
			t.Errorf("trace %s: a table was printed before the refusal:\n%s", filepath.Base(tr), out.String())
		}
	}
	// Named, the int64 trace replays.
	cfg := Config{Scenarios: []string{ScenarioHitRatio}, NoRedis: true, Traces: []string{p64 + ":int64"}, Keys: 100, Ops: 100, Sizes: "10",
		TraceSizes: "10", Duration: 10e6, Workloads: []string{"uniform"}}
	var out bytes.Buffer
	if err := Run(context.Background(), cfg, &out, io.Discard); err != nil {
		t.Fatalf("int64 trace named int64: %v", err)
	}
	if !strings.Contains(out.String(), "hit ratio, trace a.trace: 5000 accesses (int64)") {
		t.Errorf("no table of the int64 trace's 5000 accesses:\n%s", out.String())
	}
}
