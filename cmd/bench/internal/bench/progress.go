package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressInterval is how often a progress line is printed when the
// output is not a terminal (a pipe, a file, CI's log).
const progressInterval = 5 * time.Second

// progress reports which step the run is in, how far through it is and
// when it should end: a bar (github.com/schollz/progressbar) on a
// terminal, otherwise a line when a step starts and then every
// progressInterval. A step counts units (accesses replayed, keys loaded)
// or, for a timed step, the time it was given. It is safe for concurrent
// use; Close stops its ticker goroutine.
type progress struct {
	w    io.Writer
	term bool

	mu       sync.Mutex
	scenario string // "[2/5 peers]"
	step     string
	unit     string // "accesses"; "" for a timed step
	total    int64  // units, or milliseconds for a timed step
	done     int64
	timed    bool
	start    time.Time
	bar      *progressbar.ProgressBar
	lastLine time.Time
	// onTick, if set, runs at every tick (the load-average sampler).
	onTick func()

	stop chan struct{}
	wg   sync.WaitGroup
}

// newProgress returns a progress reporter writing to w, with a bar when w
// is a terminal; nil w reports nothing.
func newProgress(w io.Writer, onTick func()) *progress {
	p := &progress{w: w, onTick: onTick, stop: make(chan struct{})}
	term := w
	if l, ok := w.(*lockedWriter); ok {
		term = l.w
	}
	if f, ok := term.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.term = true
		}
	}
	tick := progressInterval
	if p.term {
		tick = 200 * time.Millisecond // a bar moves smoothly
	}
	p.wg.Go(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if p.onTick != nil {
					p.onTick()
				}
				p.mu.Lock()
				p.render(false)
				p.mu.Unlock()
			}
		}
	})
	return p
}

// Scenario names the scenario the next steps belong to: i of n.
func (p *progress) Scenario(i, n int, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endStep()
	p.scenario = fmt.Sprintf("[%d/%d %s]", i, n, name)
}

// Step starts a step of total units (named by unit, e.g. "accesses"); 0
// means a step of unknown length.
func (p *progress) Step(name string, total int64, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.begin(name, max(total, 0), unit, false)
}

// Timed starts a step that lasts about d; its progress is the time spent.
func (p *progress) Timed(name string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.begin(name, max(d.Milliseconds(), 1), "", true)
}

// Set records that done units of the current step are done.
func (p *progress) Set(done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = done
	if p.bar != nil {
		_ = p.bar.Set64(min(done, p.total))
	}
}

// Close ends the current step and stops the ticker.
func (p *progress) Close() {
	p.mu.Lock()
	p.endStep()
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
}

func (p *progress) begin(name string, total int64, unit string, timed bool) {
	p.endStep()
	p.step, p.total, p.unit, p.timed, p.done, p.start = name, total, unit, timed, 0, time.Now()
	if p.w == nil {
		return
	}
	if p.term {
		if total == 0 {
			total = -1 // the bar's spinner
		}
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.scenario+" "+name),
			progressbar.OptionSetWidth(24),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		return
	}
	p.render(true)
}

// endStep finishes the current step's bar.
func (p *progress) endStep() {
	if p.bar != nil {
		_ = p.bar.Finish()
		_ = p.bar.Clear()
		p.bar = nil
	}
	p.step = ""
}

// render brings the bar up to date, or prints a line when one is due
// (always with force). The caller holds p.mu.
func (p *progress) render(force bool) {
	if p.step == "" || p.w == nil {
		return
	}
	elapsed := time.Since(p.start)
	done := p.done
	if p.timed {
		done = min(elapsed.Milliseconds(), p.total)
	}
	if p.bar != nil {
		_ = p.bar.Set64(done)
		return
	}
	if !force && time.Since(p.lastLine) < progressInterval-progressInterval/10 {
		return
	}
	p.lastLine = time.Now()
	if p.total == 0 { // a step of unknown length
		fmt.Fprintf(p.w, "bench %s %s: started, %s elapsed\n", p.scenario, p.step, roughDuration(elapsed))
		return
	}
	frac := float64(done) / float64(p.total)
	eta := "ETA unknown"
	switch {
	case p.timed:
		eta = "ETA " + roughDuration(max(time.Duration(p.total)*time.Millisecond-elapsed, 0))
	case frac > 0:
		eta = "ETA " + roughDuration(time.Duration(float64(elapsed)*(1-frac)/frac))
	}
	of := ""
	if !p.timed {
		of = fmt.Sprintf(" of %d %s", p.total, p.unit)
	} else {
		of = " of " + roughDuration(time.Duration(p.total)*time.Millisecond)
	}
	fmt.Fprintf(p.w, "bench %s %s: %3.0f %%%s, %s elapsed, %s\n",
		p.scenario, p.step, 100*frac, of, roughDuration(elapsed), eta)
}

// roughDuration rounds d for a progress line: 340ms, 4.2s, 1m12s.
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
