package bench

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency ranges recorded: 1 ns to 60 s at 3 significant figures.
const (
	minLatency = 1
	maxLatency = int64(60 * time.Second)
	sigFigs    = 3
)

// Recorder collects operation latencies in an HdrHistogram. It is not safe
// for concurrent use: give each goroutine its own and Merge them.
type Recorder struct {
	h *hdrhistogram.Histogram
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{h: hdrhistogram.New(minLatency, maxLatency, sigFigs)}
}

// Record adds one latency; values outside the range are clamped.
func (r *Recorder) Record(d time.Duration) {
	v := int64(d)
	if v < minLatency {
		v = minLatency
	}
	if v > maxLatency {
		v = maxLatency
	}
	_ = r.h.RecordValue(v) // cannot fail: v is in range
}

// Merge adds every value of o to r.
func (r *Recorder) Merge(o *Recorder) { r.h.Merge(o.h) }

// Count returns how many latencies were recorded.
func (r *Recorder) Count() int64 { return r.h.TotalCount() }

// Summary is a latency distribution's usual figures.
type Summary struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summary returns r's percentiles.
func (r *Recorder) Summary() Summary {
	q := func(p float64) time.Duration { return time.Duration(r.h.ValueAtQuantile(p)) }
	return Summary{
		Count: r.h.TotalCount(),
		Mean:  time.Duration(r.h.Mean()),
		P50:   q(50),
		P90:   q(90),
		P99:   q(99),
		P999:  q(99.9),
		Max:   time.Duration(r.h.Max()),
	}
}

// fmtDur formats d compactly for tables: 850ns, 12.3µs, 4.56ms, 1.2s.
func fmtDur(d time.Duration) string {
	switch {
	case d <= minLatency:
		return "0" // recorded as 0 and clamped to the histogram's floor
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// fmtPct formats a ratio in [0, 1] as a percentage with two decimals.
func fmtPct(r float64) string { return fmt.Sprintf("%.2f %%", 100*r) }

// fmtRate formats operations per second.
func fmtRate(opsPerSec float64) string {
	switch {
	case opsPerSec >= 1e6:
		return fmt.Sprintf("%.2fM/s", opsPerSec/1e6)
	case opsPerSec >= 1e3:
		return fmt.Sprintf("%.1fk/s", opsPerSec/1e3)
	}
	return fmt.Sprintf("%.0f/s", opsPerSec)
}

// fmtVs compares v with ref, the reference's figure, as "2.10× slower",
// "1.54× faster" or "same": for a latency (lowerIsBetter) v/ref is the
// slowdown, for a throughput ref/v is.
func fmtVs(v, ref float64, lowerIsBetter bool) string {
	if v <= 0 || ref <= 0 {
		return ""
	}
	slow := v / ref
	if !lowerIsBetter {
		slow = ref / v
	}
	switch {
	case slow >= 1.005:
		return fmt.Sprintf("%.2f× slower", slow)
	case slow <= 1/1.005:
		return fmt.Sprintf("%.2f× faster", 1/slow)
	}
	return "same"
}

// signedRecorder collects durations that may be negative (a lag measured
// from an acknowledgement that the event can precede): magnitudes of the
// negative ones and the others in two Recorders.
type signedRecorder struct {
	neg, pos *Recorder
}

func newSignedRecorder() *signedRecorder {
	return &signedRecorder{neg: NewRecorder(), pos: NewRecorder()}
}

// Record adds d.
func (r *signedRecorder) Record(d time.Duration) {
	if d < 0 {
		r.neg.Record(-d)
		return
	}
	r.pos.Record(d)
}

// negatives returns how many recorded durations were negative.
func (r *signedRecorder) negatives() int64 { return r.neg.Count() }

// quantile returns the q-th percentile (0: the minimum, 100: the maximum)
// of every recorded duration, negative ones included; 0 when empty.
func (r *signedRecorder) quantile(q float64) time.Duration {
	nn, np := r.neg.Count(), r.pos.Count()
	n := nn + np
	if n == 0 {
		return 0
	}
	rank := q / 100 * float64(n)
	if nn > 0 && (rank < float64(nn) || np == 0) {
		// The most negative value comes first: rank r among the negatives
		// is quantile 1 − r/nn of their magnitudes.
		return -time.Duration(r.neg.h.ValueAtQuantile(100 * (1 - rank/float64(nn))))
	}
	if q >= 100 {
		return time.Duration(r.pos.h.Max())
	}
	return time.Duration(r.pos.h.ValueAtQuantile(100 * (rank - float64(nn)) / float64(np)))
}

// fmtSigned formats a signed duration like fmtDur, with a minus sign.
func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return fmtDur(d)
}
