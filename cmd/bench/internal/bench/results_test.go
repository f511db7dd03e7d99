package bench

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func sampleResults() *Results {
	return &Results{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Host:    Host{GOOS: "linux", GOARCH: "amd64", CPUs: 2, GoVersion: "go1.26", Redis: "none"},
		Sections: []*Section{{
			Scenario: "x",
			Title:    "Sample <section>",
			Notes:    []string{"a note & more"},
			Tables: []Table{{
				Title:   "widths",
				Columns: []string{"name", "value"},
				Rows:    [][]string{{"a", "1"}, {"longer-name", "12345"}},
			}},
			Charts: []Chart{
				{Title: "curve", Kind: LineChart, XLabel: "size", YLabel: "hit %", LogX: true,
					Series: []Series{{Name: "lru", Points: []Point{{X: 10, Y: 5}, {X: 100, Y: 30}, {X: 1000, Y: 60}}}}},
				{Title: "bars", Kind: BarChart, XLabel: "cache", YLabel: "ns",
					Series: []Series{{Name: "p50", Points: []Point{{Label: "a", Y: 3}, {Label: "b", Y: 7}}}}},
			},
			Bench: []Bench{{Name: "Peers/otter", N: 1000, Metrics: []Metric{{123.456, "ns/op"}, {0.8712, "hit-ratio"}}}},
		}},
	}
}

func TestWriteTextAlignsAndPrintsBenchLines(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResults().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// Right-aligned columns end at the same offset on every row.
	var ends []int
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "12345") || strings.Contains(l, "value") {
			ends = append(ends, len(strings.TrimRight(l, " ")))
		}
	}
	if len(ends) != 2 || ends[0] != ends[1] {
		t.Errorf("value column not aligned, line ends %v in:\n%s", ends, out)
	}
	if !regexp.MustCompile(`(?m)^BenchmarkPeers/otter-2\t1000\t123\.5 ns/op\t0\.8712 hit-ratio$`).MatchString(out) {
		t.Errorf("no benchstat line in:\n%s", out)
	}
	if !strings.Contains(out, "note: a note & more") {
		t.Errorf("note missing in:\n%s", out)
	}
}

func TestWriteJSONRoundTrips(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResults().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got Results
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Sections[0].Tables[0].Rows[1][1] != "12345" || got.Sections[0].Charts[0].Series[0].Points[2].Y != 60 {
		t.Errorf("round trip lost data: %+v", got.Sections[0])
	}
}

func TestWriteHTMLDrawsCharts(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResults().WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"<polyline", "<rect x=", "Sample &lt;section&gt;", "a note &amp; more"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "http://", "https://"} {
		if strings.Contains(strings.ReplaceAll(out, `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("report contains %q: it must be self-contained", bad)
		}
	}
	if n := strings.Count(out, "<svg"); n != 2 {
		t.Errorf("report has %d charts, want 2", n)
	}
}

func TestRecorderPercentiles(t *testing.T) {
	r, o := NewRecorder(), NewRecorder()
	for i := 1; i <= 1000; i++ {
		r.Record(time.Duration(i) * time.Microsecond)
	}
	o.Record(time.Hour) // clamped to the range's top
	r.Merge(o)
	s := r.Summary()
	within := func(got, want time.Duration) bool { return got >= want*99/100 && got <= want*101/100 }
	if s.Count != 1001 || !within(s.P50, 500*time.Microsecond) || !within(s.P99, 990*time.Microsecond) {
		t.Errorf("summary = %+v, want count 1001, p50 ≈ 500µs, p99 ≈ 990µs", s)
	}
	if s.Max < 59*time.Second {
		t.Errorf("max = %v, want the clamped 60s", s.Max)
	}
}

func TestNiceTicksCoverRange(t *testing.T) {
	tests := []struct{ lo, hi float64 }{{0, 1}, {0, 97}, {0, 0.034}, {-5, 12}, {3, 3}}
	for _, tt := range tests {
		ts := niceTicks(tt.lo, tt.hi, tickCount)
		if len(ts) < 2 || ts[0] > tt.lo || ts[len(ts)-1] < tt.hi || len(ts) > 2*tickCount+1 {
			t.Errorf("niceTicks(%v, %v) = %v: does not cover the range in a few ticks", tt.lo, tt.hi, ts)
		}
	}
}
