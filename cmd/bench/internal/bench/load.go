package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// loadWatch samples the machine's 1-minute load average (Linux's
// /proc/loadavg) and keeps the highest value seen since the last Take, so
// a scenario that ran on a busy machine says so.
type loadWatch struct {
	read func() (float64, bool)
	mu   sync.Mutex
	peak float64
}

func newLoadWatch() *loadWatch { return &loadWatch{read: readLoadAvg} }

// Sample reads the load average once.
func (l *loadWatch) Sample() {
	v, ok := l.read()
	if !ok {
		return
	}
	l.mu.Lock()
	l.peak = max(l.peak, v)
	l.mu.Unlock()
}

// Take samples once more and returns the peak since the last Take, and
// whether the load average could be read at all.
func (l *loadWatch) Take() (float64, bool) {
	v, ok := l.read()
	l.mu.Lock()
	defer l.mu.Unlock()
	p := max(l.peak, v)
	l.peak = 0
	return p, ok
}

// warning returns the warning for a peak load above the cores, or "".
func loadWarning(peak float64, cores int) string {
	if peak <= float64(cores) {
		return ""
	}
	return fmt.Sprintf("the machine was loaded: load average up to %.2f on %d cores while this ran (other processes competed for the CPU), so latencies are higher and throughputs lower than on an idle machine", peak, cores)
}

// readLoadAvg returns the 1-minute load average, false where there is
// none to read.
func readLoadAvg() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}

// cores is what the load average is compared with.
func cores() int { return runtime.NumCPU() }
