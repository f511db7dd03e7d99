package bench

import (
	"fmt"
	"io"
	"os"
)

// progress prints one-line status updates to a terminal, and nothing when
// the writer is not one (a pipe, a file, a test's buffer).
type progress struct {
	w  io.Writer // nil when silent
	on bool
}

// newProgress returns a progress printer that writes to w only when w is
// an *os.File attached to a character device (a terminal).
func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	if !ok {
		return &progress{}
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return &progress{}
	}
	return &progress{w: w, on: true}
}

// Printf shows a status line, replacing the previous one.
func (p *progress) Printf(format string, args ...any) {
	if !p.on {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K"+format, args...)
}

// Done ends the status line.
func (p *progress) Done() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
