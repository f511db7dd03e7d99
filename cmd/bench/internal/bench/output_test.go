package bench

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/tracking"
)

// TestMemoryPoliciesComeFromTracking checks that the replayed policies are
// tracking's, named as tracking names them, and only those tiered accepts.
func TestMemoryPoliciesComeFromTracking(t *testing.T) {
	got := memoryPolicyNames()
	for _, want := range []tracking.Policy{tracking.PolicyLRU, tracking.PolicyTwoQueue} {
		if !strings.Contains(","+strings.Join(got, ",")+",", ","+want.String()+",") {
			t.Errorf("memory policies %v lack %s", got, want)
		}
	}
	for _, p := range memoryPolicies() {
		if p == tracking.PolicyARC {
			t.Errorf("memory policies %v include arc, which tiered refuses", got)
		}
	}
	c := Config{MemoryPolicies: []string{"LRU"}}
	if pols, err := c.selectedMemoryPolicies(); err != nil || len(pols) != 1 || pols[0] != tracking.PolicyLRU {
		t.Errorf("selectedMemoryPolicies(LRU) = %v, %v", pols, err)
	}
}

func TestFmtVs(t *testing.T) {
	tests := []struct {
		v, ref float64
		lower  bool
		want   string
	}{
		{300, 100, true, "3.00× slower"}, // latency: higher is slower
		{50, 100, true, "2.00× faster"},
		{50, 100, false, "2.00× slower"}, // throughput: lower is slower
		{300, 100, false, "3.00× faster"},
		{100, 100.2, true, "same"},
		{0, 100, true, ""},
	}
	for _, tt := range tests {
		if got := fmtVs(tt.v, tt.ref, tt.lower); got != tt.want {
			t.Errorf("fmtVs(%v, %v, %v) = %q, want %q", tt.v, tt.ref, tt.lower, got, tt.want)
		}
	}
}

func TestSignedRecorder(t *testing.T) {
	r := newSignedRecorder()
	if r.quantile(50) != 0 {
		t.Errorf("empty quantile = %v, want 0", r.quantile(50))
	}
	for _, us := range []int{-300, -100, 10, 20, 30, 40, 50, 60, 70, 80} {
		r.Record(time.Duration(us) * time.Microsecond)
	}
	near := func(got time.Duration, wantUS int) bool {
		d := got - time.Duration(wantUS)*time.Microsecond
		return d.Abs() <= time.Duration(wantUS).Abs()*10+time.Microsecond // 1 %, within HdrHistogram's precision
	}
	for _, c := range []struct {
		q    float64
		want int
	}{{0, -300}, {10, -100}, {50, 30}, {100, 80}} { // 50: the 5th of 10
		if got := r.quantile(c.q); !near(got, c.want) {
			t.Errorf("quantile(%v) = %v, want about %dµs", c.q, got, c.want)
		}
	}
	if r.negatives() != 2 {
		t.Errorf("negatives = %d, want 2", r.negatives())
	}
	if got := fmtSigned(-1500 * time.Microsecond); got != "−1.5ms" {
		t.Errorf("fmtSigned(-1.5ms) = %q", got)
	}
}

func TestLoadWatch(t *testing.T) {
	vals := []float64{1.5, 4.2, 0.7}
	l := &loadWatch{read: func() (float64, bool) {
		v := vals[0]
		if len(vals) > 1 {
			vals = vals[1:]
		}
		return v, true
	}}
	l.Sample() // 1.5
	l.Sample() // 4.2
	if peak, ok := l.Take(); !ok || peak != 4.2 {
		t.Errorf("Take = %v, %v; want the peak 4.2", peak, ok)
	}
	if peak, _ := l.Take(); peak != 0.7 {
		t.Errorf("Take after Take = %v, want 0.7 (the peak restarts)", peak)
	}
	if w := loadWarning(4.2, 2); !strings.Contains(w, "4.20 on 2 cores") {
		t.Errorf("loadWarning(4.2, 2) = %q", w)
	}
	if w := loadWarning(1.9, 2); w != "" {
		t.Errorf("loadWarning(1.9, 2) = %q, want none", w)
	}
}

// TestProgressLines checks the lines printed when the output is not a
// terminal: the scenario, the step, a percentage and an ETA.
func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, nil)
	p.Scenario(2, 5, "peers")
	p.Step("replaying P3", 200, "accesses")
	p.Set(50)
	p.mu.Lock()
	p.render(true)
	p.mu.Unlock()
	p.Timed("otter", time.Minute)
	p.Close()
	out := b.String()
	for _, re := range []string{
		`(?m)^bench \[2/5 peers\] replaying P3:   0 % of 200 accesses, 0s elapsed, ETA unknown$`,
		`(?m)^bench \[2/5 peers\] replaying P3:  25 % of 200 accesses, .* elapsed, ETA .+$`,
		`(?m)^bench \[2/5 peers\] otter:   0 % of 1m0s, 0s elapsed, ETA (59s|1m0s)$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("progress output lacks %s:\n%s", re, out)
		}
	}
}

// TestChartsDrawWhatTheyShow checks the SVG rules: a series that draws
// nothing has no legend entry, latency axes can be logarithmic, and a log
// X axis ticks at the sizes measured.
func TestChartsDrawWhatTheyShow(t *testing.T) {
	bar := Chart{Title: "b", Kind: BarChart, LogY: true, Series: []Series{
		{Name: "memory", Points: []Point{{Label: "a", Y: 70}, {Label: "b", Y: 0.5}}},
		{Name: "disk", Points: []Point{{Label: "a", Y: 0}, {Label: "b", Y: 0}}},
	}}
	svg := string(renderSVG(bar))
	if strings.Contains(svg, ">disk<") {
		t.Errorf("legend shows the all-zero series disk")
	}
	for _, tick := range []string{">0.1<", ">1<", ">10<", ">100<"} {
		if !strings.Contains(svg, tick) {
			t.Errorf("log axis lacks tick %s", tick)
		}
	}
	line := Chart{Title: "l", Kind: LineChart, LogX: true, Series: []Series{
		{Name: "lru", Points: []Point{{X: 4096, Y: 1}, {X: 131072, Y: 40}}},
		{Name: "arc", Points: []Point{{X: 4096, Y: 1}, {X: 131072, Y: 40}}},
	}}
	svg = string(renderSVG(line))
	for _, want := range []string{">4096<", ">131072<", "<circle", "<rect x=", "stroke-dasharray"} {
		if !strings.Contains(svg, want) {
			t.Errorf("line chart lacks %q (ticks at the sizes; a marker shape and a dash per series)", want)
		}
	}
	if strings.Contains(svg, ">1M<") || strings.Contains(svg, ">1k<") {
		t.Errorf("log X axis runs past the data (1k or 1M tick)")
	}
}
