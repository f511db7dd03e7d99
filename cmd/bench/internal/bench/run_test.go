package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// smallConfig is a reduced suite: every scenario, tiny sizes, a small ARC
// trace written by the test.
func smallConfig(t *testing.T) Config {
	t.Helper()
	tr := filepath.Join(t.TempDir(), "small.lis")
	var b strings.Builder
	for i := range 3000 {
		// A looping scan over 600 blocks plus a hot block: LRU at 1024
		// entries holds it all after the first pass.
		b.WriteString(strings.Join([]string{itoa(i % 600 * 2), "2", "0", itoa(i)}, " ") + "\n")
		b.WriteString("99999 1 0 0\n")
	}
	if err := os.WriteFile(tr, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		Keys:     2000,
		Ops:      20_000,
		Duration: 100 * time.Millisecond,
		Sizes:    "1%,10%,50%",
		Traces:   []string{tr + ":arc"},
		Out:      t.TempDir(),
		Seed:     7,

		Processes:          3,
		StampedeGoroutines: 8,
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestRunReducedSuite runs every available scenario at a reduced size with
// a private redis-server started by Run itself (the default path), and
// checks that every table is printed, the JSON parses and every chart in
// the HTML report is drawn.
func TestRunReducedSuite(t *testing.T) {
	redistest.Binary(t) // fail (or skip on request) with the usual message when redis-server is missing
	cfg := smallConfig(t)
	var out, errOut bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut.String())
	}
	if !strings.HasPrefix(res.Host.Redis, "single Redis, private redis-server") || res.Host.RedisTopology != "single Redis" {
		t.Errorf("Host.Redis = %q, topology %q; want a private single redis-server", res.Host.Redis, res.Host.RedisTopology)
	}
	// Not a terminal: progress comes as lines naming the scenario and step,
	// with a percentage and an ETA.
	if !regexp.MustCompile(`(?m)^bench \[1/\d hitratio\] .*: +\d+ % of .*, ETA `).MatchString(errOut.String()) {
		t.Errorf("stderr has no progress line for hitratio:\n%s", errOut.String())
	}
	checkSuite(t, cfg, res, out.String())
}

// checkSuite checks a reduced suite's results and outputs: every table
// printed, the promised figures, results.json and report.html (which say
// which Redis topology ran) in cfg.Out.
func checkSuite(t *testing.T, cfg Config, res *Results, text string) {
	t.Helper()
	if !strings.Contains(text, "Redis: "+res.Host.Redis+"\n") || !strings.HasPrefix(res.Host.Redis, res.Host.RedisTopology) {
		t.Errorf("text header lacks the Redis line %q (topology %q)", res.Host.Redis, res.Host.RedisTopology)
	}
	want := len(cfg.Scenarios)
	if want == 0 {
		want = len(Available())
	}
	if len(res.Sections) != want {
		t.Fatalf("%d sections, want %d", len(res.Sections), want)
	}
	has := func(s string) bool { return len(cfg.Scenarios) == 0 || slices.Contains(cfg.Scenarios, s) }
	for _, s := range res.Sections {
		if len(s.Tables) == 0 || len(s.Charts) == 0 {
			t.Errorf("section %s has %d tables and %d charts, want some of each", s.Scenario, len(s.Tables), len(s.Charts))
		}
		for _, tb := range s.Tables {
			if !strings.Contains(text, tb.Title) {
				t.Errorf("table %q not printed", tb.Title)
			}
			if len(tb.Rows) == 0 {
				t.Errorf("table %q has no rows", tb.Title)
			}
		}
	}
	// Each measured peer and staleness row appears with figures.
	for _, want := range []string{"rueidis-optin", "rueidis-bcast", "golang-lru", "otter", "redis-only", "thermos memory+redis"} {
		if has(ScenarioPeers) && !strings.Contains(text, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if has(ScenarioPeers) && !regexp.MustCompile(`(?m)^BenchmarkPeers/otter-\d+\t\d+\t\d+ ns/op`).MatchString(text) {
		t.Errorf("no benchstat line for otter in stdout")
	}
	// Stale reads beyond the invalidation lag must be 0 for rueidis.
	for _, s := range res.Sections {
		for _, b := range s.Bench {
			for _, m := range b.Metrics {
				if m.Unit == "stale-beyond-lag" && m.Value != 0 {
					t.Errorf("%s: %v reads stale beyond the invalidation lag", b.Name, m.Value)
				}
			}
		}
	}

	// Figures the design promises, whatever the machine's speed.
	metric := func(name, unit string) (float64, bool) {
		for _, s := range res.Sections {
			for _, b := range s.Bench {
				if b.Name != name {
					continue
				}
				for _, m := range b.Metrics {
					if m.Unit == unit {
						return m.Value, true
					}
				}
			}
		}
		return 0, false
	}
	k, g := float64(cfg.Processes), float64(cfg.StampedeGoroutines)
	for _, tt := range []struct {
		scenario   string
		name, unit string
		want       float64
	}{
		{ScenarioStampede, "Stampede/cold/off", "origin-calls/key", k * g},    // every goroutine calls the origin
		{ScenarioStampede, "Stampede/cold/local", "origin-calls/key", k},      // one call per process
		{ScenarioStampede, "Stampede/cold/shared", "origin-calls/key", 1},     // one call across the processes
		{ScenarioRestart, "Restart/warm_disk_and_Redis", "origin-calls", 0},   // disk and Redis hold every key
		{ScenarioRestart, "Restart/no_disk_Redis_warm", "origin-calls", 0},    // Redis holds every key
		{ScenarioHitRatio, "Layout/thermos_memory", "origin-loads", -1},       // present
		{ScenarioHitRatio, "Layout/thermos_memory+redis", "origin-loads", -1}, // present
		{ScenarioHitRatio, "Layout/thermos_memory+disk+redis", "ns/op", -1},   // present
		{ScenarioHitRatio, "Layout/thermos_memory/saturated", "goroutines", 32 * float64(runtime.GOMAXPROCS(0))},
		{ScenarioHitRatio, "Layout/thermos_memory+redis/saturated", "ops/s", -1}, // present
		{ScenarioPeers, "Peers/thermos_memory+redis", "hit-ratio", -1},           // present
		{ScenarioStaleness, "Staleness/thermos_memory+redis", "lag-p50-ns", -1},  // present
	} {
		got, ok := metric(tt.name, tt.unit)
		switch {
		case !has(tt.scenario):
		case !ok:
			t.Errorf("no %s metric in Benchmark%s", tt.unit, tt.name)
		case tt.want >= 0 && got != tt.want:
			t.Errorf("Benchmark%s: %v %s, want %v", tt.name, got, tt.unit, tt.want)
		}
	}
	if got, _ := metric("Restart/cold_nothing_cached", "origin-calls"); has(ScenarioRestart) && got == 0 {
		t.Errorf("cold restart made no origin call")
	}

	raw, err := os.ReadFile(filepath.Join(cfg.Out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(back.Sections) != len(res.Sections) {
		t.Errorf("results.json has %d sections, want %d", len(back.Sections), len(res.Sections))
	}
	if back.Host.RedisTopology != res.Host.RedisTopology || back.Host.Redis != res.Host.Redis {
		t.Errorf("results.json host Redis %q (%q), want %q (%q)", back.Host.Redis, back.Host.RedisTopology, res.Host.Redis, res.Host.RedisTopology)
	}

	page, err := os.ReadFile(filepath.Join(cfg.Out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "Redis: "+html.EscapeString(res.Host.Redis)) {
		t.Errorf("report.html does not say which Redis ran (%q)", res.Host.Redis)
	}
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(string(page), -1)
	charts := 0
	for _, s := range res.Sections {
		charts += len(s.Charts)
	}
	if len(svgs) != charts {
		t.Errorf("report has %d SVG charts, want %d", len(svgs), charts)
	}
	// Every series of every chart has points, and every line series is drawn.
	lines := 0
	for _, s := range res.Sections {
		for _, c := range s.Charts {
			for _, sr := range c.Series {
				if len(sr.Points) == 0 {
					t.Errorf("chart %q: series %q has no points", c.Title, sr.Name)
				}
				if c.Kind == LineChart {
					lines++
				}
			}
		}
	}
	if n := len(regexp.MustCompile(`<polyline[^>]*points="[0-9]`).FindAllString(string(page), -1)); n != lines {
		t.Errorf("report draws %d lines, want one per line series (%d)", n, lines)
	}
	for i, s := range svgs {
		// A drawn chart has a polyline with points or a bar taller than 0.5.
		if !regexp.MustCompile(`<polyline[^>]*points="[0-9]|<rect x="[^"]*" y="[^"]*" width="[^"]*" height="([1-9]|0\.[6-9])`).MatchString(s) {
			t.Errorf("chart %d is empty: %.300s", i, s)
		}
	}
}

// TestRunExistingRedisAndNoRedis covers --redis ADDR and --no-redis: with
// no Redis the Redis-free parts still run.
func TestRunExistingRedisAndNoRedis(t *testing.T) {
	srv := redistest.Start(t, nil)
	cfg := smallConfig(t)
	cfg.Scenarios = []string{ScenarioPeers}
	cfg.Redis = srv.Addr()
	cfg.Out = ""
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Host.Redis != "single Redis, existing, at "+srv.Addr() {
		t.Errorf("Host.Redis = %q", res.Host.Redis)
	}
	if got, err := srv.Do("EXISTS", keyName(0)); err != nil || got != "1" {
		t.Errorf("EXISTS %s on --redis server = %q, %v; want the preloaded key", keyName(0), got, err)
	}

	cfg.Redis, cfg.NoRedis = "", true
	cfg.Scenarios = []string{ScenarioPeers, ScenarioStaleness}
	out.Reset()
	res, err = run(context.Background(), cfg, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	peersTable := res.Sections[0].Tables[0]
	var names []string
	for _, r := range peersTable.Rows {
		names = append(names, r[0])
	}
	if got := strings.Join(names, ","); got != "thermos memory+redis,rueidis-optin,rueidis-bcast,golang-lru,otter,redis-only" {
		t.Errorf("peers without Redis = %s, want every peer listed", got)
	}
	for _, r := range peersTable.Rows {
		needsRedis := r[0] != "golang-lru" && r[0] != "otter"
		if skipped := r[2] == "skipped: no Redis"; skipped != needsRedis {
			t.Errorf("peers without Redis: row %q: hit ratio cell %q, want skipped only when it needs Redis", r[0], r[2])
		}
	}
	if n := res.Sections[1].Notes; len(n) == 0 || !strings.Contains(n[0], "skipped") {
		t.Errorf("staleness without Redis notes = %q, want a skip note", n)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"unknown scenario", Config{Scenarios: []string{"latency"}}, ErrConfig},
		{"negative processes", Config{Processes: -1}, ErrConfig},
		{"too many processes", Config{Processes: 65}, ErrConfig},
		{"negative stampede goroutines", Config{StampedeGoroutines: -1}, ErrConfig},
		{"negative origin delay", Config{OriginDelay: -time.Millisecond}, ErrConfig},
		{"twice", Config{Scenarios: []string{ScenarioPeers, ScenarioPeers}}, ErrConfig},
		{"negative keys", Config{Keys: -1}, ErrConfig},
		{"theta 1", Config{Theta: 1}, ErrConfig},
		{"bad workload", Config{Workloads: []string{"pareto"}}, ErrConfig},
		{"bad mix", Config{Mix: "E"}, ErrConfig},
		{"bad size", Config{Sizes: "10,abc"}, ErrConfig},
		{"share over 100", Config{Sizes: "150%"}, ErrConfig},
		{"redis and no-redis", Config{Redis: "127.0.0.1:1", NoRedis: true}, ErrConfig},
		{"trace missing", Config{Traces: []string{"x.csv"}, NoRedis: true}, ErrConfig},
		{"trace format unknown", Config{Traces: []string{"x.csv:csv"}, NoRedis: true}, ErrConfig},
		{"restart keys over the cap", Config{Keys: MaxRestartKeys + 1, Scenarios: []string{ScenarioRestart}}, ErrConfig},
		{"memory policy tiered does not offer", Config{MemoryPolicies: []string{"arc"}}, ErrConfig},
		{"unknown sim policy", Config{SimPolicies: []string{"lfu"}}, ErrConfig},
		{"bad disk replay", Config{DiskReplay: "some"}, ErrConfig},
		{"bad trace size", Config{TraceSizes: "0"}, ErrConfig},
		{"negative duration", Config{Duration: -time.Second}, ErrConfig},
	}
	for _, tt := range tests {
		err := Run(context.Background(), tt.cfg, &bytes.Buffer{}, &bytes.Buffer{})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Run error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestSizes(t *testing.T) {
	got, err := Config{Keys: 1000, Sizes: "10%, 5,10%,0.05%"}.sizes()
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 5, 100}; !slices.Equal(got, want) {
		t.Errorf("sizes = %v, want %v", got, want)
	}
}
