package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// scenarioFunc runs one scenario and returns its section.
type scenarioFunc func(ctx context.Context, c Config, e *env, p *progress) (*Section, error)

// scenarios maps the available scenario names to their code.
func scenarios() map[string]scenarioFunc {
	return map[string]scenarioFunc{
		ScenarioHitRatio:  hitRatio,
		ScenarioPeers:     peers,
		ScenarioStaleness: staleness,
		ScenarioRestart:   restart,
		ScenarioStampede:  stampede,
	}
}

// Run validates cfg, runs its scenarios and writes the tables and Go
// benchmark lines to stdout, progress to stderr (a bar on a terminal,
// periodic lines otherwise), and report.html and results.json to cfg.Out
// when it is set. A missing
// redis-server is reported on stderr and the Redis-free parts still run.
// It returns the first error; ctx cancels the run.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	_, err := run(ctx, cfg, stdout, stderr)
	return err
}

func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (*Results, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.Out != "" {
		if err := os.MkdirAll(c.Out, 0o755); err != nil {
			return nil, fmt.Errorf("bench: --out: %w", err)
		}
	}
	// Progress lines come from a ticker goroutine too: one lock orders
	// every write to stderr.
	stderr = &lockedWriter{w: stderr}
	lw := newLoadWatch()
	p := newProgress(stderr, lw.Sample)
	defer p.Close()
	e, err := openEnv(ctx, c, stderr)
	if err != nil {
		return nil, err
	}
	defer e.Close()

	res := &Results{
		Started: time.Now(),
		Host: Host{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.GOMAXPROCS(0),
			GoVersion: runtime.Version(), Redis: e.redisDesc, RedisTopology: e.topology},
		Config: c,
	}
	if err := res.writeHeader(stdout); err != nil {
		return nil, err
	}
	fns := scenarios()
	lw.Take() // the load before the first scenario is not its own
	for i, name := range c.Scenarios {
		p.Scenario(i+1, len(c.Scenarios), name)
		sec, err := fns[name](ctx, c, e, p)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		if peak, ok := lw.Take(); ok {
			sec.Load = peak
			if w := loadWarning(peak, cores()); w != "" {
				sec.Warnings = append(sec.Warnings, w)
			}
		}
		res.Sections = append(res.Sections, sec)
		p.Scenario(i+1, len(c.Scenarios), name) // ends the last step's bar before the tables print
		one := &Results{Host: res.Host, Sections: []*Section{sec}}
		if err := one.writeSections(stdout); err != nil {
			return nil, err
		}
	}
	res.Duration = time.Since(res.Started).Round(time.Millisecond)
	if err := res.WriteBench(stdout); err != nil {
		return nil, err
	}
	if c.Out != "" {
		if err := writeFile(filepath.Join(c.Out, "report.html"), res.WriteHTML); err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(c.Out, "results.json"), res.WriteJSON); err != nil {
			return nil, err
		}
		fmt.Fprintf(stdout, "\nreport: %s\nresults: %s\n", filepath.Join(c.Out, "report.html"), filepath.Join(c.Out, "results.json"))
	}
	return res, nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// writeFile writes path with fn, reporting the first error of either.
func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
