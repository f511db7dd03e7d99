package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is everything one Run measured, in the shape written to
// results.json.
type Results struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Host     Host          `json:"host"`
	Config   Config        `json:"config"`
	Sections []*Section    `json:"sections"`
}

// Host describes the machine a run measured.
type Host struct {
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	Redis     string `json:"redis"` // how Redis was reached, or why not; starts with RedisTopology when there is Redis
	// RedisTopology is "single Redis" or "Redis Cluster (N primaries)";
	// empty when the run had no Redis.
	RedisTopology string `json:"redis_topology,omitempty"`
}

// Section is one scenario's output: tables, charts, notes and Go benchmark
// lines.
type Section struct {
	Scenario string   `json:"scenario"`
	Title    string   `json:"title"`
	Notes    []string `json:"notes,omitempty"`
	// Warnings say why figures may mislead: a rate not achieved, a loaded
	// machine. Printed before the tables.
	Warnings []string `json:"warnings,omitempty"`
	// Load is the highest 1-minute load average seen while the scenario
	// ran (0 where it cannot be read).
	Load   float64 `json:"load_avg_peak,omitempty"`
	Tables []Table `json:"tables,omitempty"`
	Charts []Chart `json:"charts,omitempty"`
	Bench  []Bench `json:"bench,omitempty"`
}

// add appends t and the charts that illustrate it; the HTML report shows
// them side by side.
func (s *Section) add(t Table, charts ...Chart) {
	for _, c := range charts {
		c.Table = len(s.Tables)
		s.Charts = append(s.Charts, c)
	}
	s.Tables = append(s.Tables, t)
}

// Table is a titled grid of already formatted cells.
type Table struct {
	Title   string     `json:"title"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

// ChartKind says how a Chart is drawn.
type ChartKind string

// Chart kinds.
const (
	LineChart ChartKind = "line" // one polyline per series over X
	BarChart  ChartKind = "bar"  // one bar per series point, grouped by X label
)

// Chart is a line or bar chart of one or more series.
type Chart struct {
	Title  string    `json:"title"`
	Kind   ChartKind `json:"kind"`
	XLabel string    `json:"x_label"`
	YLabel string    `json:"y_label"`
	LogX   bool      `json:"log_x,omitempty"`
	LogY   bool      `json:"log_y,omitempty"` // for latencies spanning decades
	// Table is the index in its Section's Tables of the table it
	// illustrates.
	Table  int      `json:"table"`
	Series []Series `json:"series"`
}

// Series is one named line or bar group.
type Series struct {
	Name   string  `json:"name"`
	Points []Point `json:"points"`
}

// Point is one value. Label names the point on a bar chart's X axis.
type Point struct {
	X     float64 `json:"x"`
	Y     float64 `json:"y"`
	Label string  `json:"label,omitempty"`
}

// Bench is one line in Go benchmark format, so benchstat can compare runs:
// BenchmarkName-CPUs  N  value unit  value unit ...
type Bench struct {
	Name    string   `json:"name"`
	N       int64    `json:"n"`
	Metrics []Metric `json:"metrics"`
}

// Metric is one value and its unit in a Bench line.
type Metric struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// String formats b the way `go test -bench` does.
func (b Bench) String(cpus int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Benchmark%s-%d\t%d", b.Name, cpus, b.N)
	for _, m := range b.Metrics {
		fmt.Fprintf(&sb, "\t%s %s", formatMetric(m.Value), m.Unit)
	}
	return sb.String()
}

func formatMetric(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.4g", v)
}

// writeTable prints t aligned with tabwriter.
func writeTable(w io.Writer, t Table) error {
	if _, err := fmt.Fprintf(w, "\n%s\n", t.Title); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	line := func(cells []string) {
		// A trailing tab makes tabwriter align the last column too.
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	line(t.Columns)
	dash := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		dash[i] = strings.Repeat("-", len([]rune(c)))
	}
	line(dash)
	for _, r := range t.Rows {
		line(r)
	}
	return tw.Flush()
}

// WriteText prints the host header, every section's notes and tables,
// then all benchmark lines, to w.
func (r *Results) WriteText(w io.Writer) error {
	if err := r.writeHeader(w); err != nil {
		return err
	}
	if err := r.writeSections(w); err != nil {
		return err
	}
	return r.WriteBench(w)
}

// writeHeader prints the machine and the Redis the run measured.
func (r *Results) writeHeader(w io.Writer) error {
	_, err := fmt.Fprintf(w, "thermos bench: %s/%s, %d CPUs, %s\nRedis: %s\n",
		r.Host.GOOS, r.Host.GOARCH, r.Host.CPUs, r.Host.GoVersion, r.Host.Redis)
	return err
}

// writeSections prints every section's notes and tables.
func (r *Results) writeSections(w io.Writer) error {
	for _, s := range r.Sections {
		if _, err := fmt.Fprintf(w, "\n== %s ==\n", s.Title); err != nil {
			return err
		}
		for _, n := range s.Warnings {
			fmt.Fprintf(w, "WARNING: %s\n", n)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
		for _, t := range s.Tables {
			if err := writeTable(w, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteBench prints the Go benchmark-format lines, with the goos/goarch/pkg
// header benchstat expects.
func (r *Results) WriteBench(w io.Writer) error {
	fmt.Fprintf(w, "\ngoos: %s\ngoarch: %s\npkg: github.com/thermoscache/thermos/cmd/bench\n", r.Host.GOOS, r.Host.GOARCH)
	for _, s := range r.Sections {
		for _, b := range s.Bench {
			if _, err := fmt.Fprintln(w, b.String(r.Host.CPUs)); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteJSON writes r as indented JSON.
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
