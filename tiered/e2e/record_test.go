package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A history file holds one JSON object per line, written by one process.
// A write is recorded in two lines: "call" before it is sent (written
// through to the file, so a process killed mid-write leaves its call
// behind and the write counts as ambiguous) and "ret" after its reply. A
// read is one "op" line written after it returned: a read that never
// returned tells nothing. Times are wall-clock Unix nanoseconds, which every
// process on the machine shares.

// rec is one line of a history file.
type rec struct {
	E   string `json:"e"` // "call", "ret" or "op"
	ID  int64  `json:"i"`
	C   int    `json:"c,omitempty"` // worker: its operations never overlap
	K   string `json:"k,omitempty"` // kind name
	Key string `json:"key,omitempty"`
	V   []byte `json:"v,omitempty"` // written value or suffix; a load's value
	Off int    `json:"off,omitempty"`
	Ms  int64  `json:"ms,omitempty"`
	T0  int64  `json:"t0,omitempty"`
	T1  int64  `json:"t1,omitempty"`
	Th  bool   `json:"th,omitempty"` // through thermos
	Err string `json:"err,omitempty"`
	P   bool   `json:"p,omitempty"` // a value was returned
	O   []byte `json:"o,omitempty"` // the value returned
	N   *int64 `json:"n,omitempty"` // integer reply, when the command has one
	L   bool   `json:"l,omitempty"` // GetOrLoad: its loader was called
}

// recorder appends one process's operations to its history file.
type recorder struct {
	mu   sync.Mutex
	f    *os.File
	next atomic.Int64
}

func newRecorder(path string) (*recorder, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &recorder{f: f}, nil
}

func now() int64 { return time.Now().UnixNano() }

func (r *recorder) write(x *rec) {
	b, err := json.Marshal(x)
	if err != nil {
		panic(err) // a rec always marshals
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "history: %v\n", err)
		os.Exit(3) // a history with holes would check wrongly
	}
}

// call records the start of a write (x's kind, key and arguments), and
// returns its id for ret. It stamps T0 after the line is written, so the
// interval covers the operation.
func (r *recorder) call(x rec) int64 {
	x.E, x.ID = "call", r.next.Add(1)
	x.T0 = now()
	r.write(&x)
	return x.ID
}

// ret records a write's outcome: err nil, or the error that makes it
// ambiguous.
func (r *recorder) ret(id int64, err error, x rec) {
	x.E, x.ID, x.T1 = "ret", id, now()
	if err != nil {
		x.Err = err.Error()
		if x.Err == "" {
			x.Err = "error"
		}
	}
	r.write(&x)
}

// op records a completed read.
func (r *recorder) op(x rec) {
	x.E, x.ID = "op", r.next.Add(1)
	r.write(&x)
}

func (r *recorder) close() error { return r.f.Close() }

// loadHistory reads a history file written by proc into hops.
func loadHistory(path, proc string) ([]hop, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	calls := map[int64]rec{}
	var order []int64
	var out []hop
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		var x rec
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			// The last line of a killed process may be torn.
			continue
		}
		switch x.E {
		case "op":
			h, err := hopOf(proc, x, rec{}, true)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			if h != nil {
				out = append(out, *h)
			}
		case "call":
			calls[x.ID] = x
			order = append(order, x.ID)
		case "ret":
			c, ok := calls[x.ID]
			if !ok {
				return nil, fmt.Errorf("%s:%d: ret of unknown call %d", path, line, x.ID)
			}
			delete(calls, x.ID)
			h, err := hopOf(proc, c, x, true)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			if h != nil {
				out = append(out, *h)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, id := range order {
		if c, ok := calls[id]; ok { // never returned: the process was killed
			h, err := hopOf(proc, c, rec{}, false)
			if err != nil {
				return nil, err
			}
			if h != nil {
				out = append(out, *h)
			}
		}
	}
	return out, nil
}

var kindByName = func() map[string]kind {
	m := map[string]kind{}
	for k, n := range kindNames {
		m[n] = k
	}
	return m
}()

// hopOf builds an operation from a call (or op) line c and its ret line r;
// returned is false for a call that never returned. A nil hop means the
// operation tells nothing (a read that failed).
func hopOf(proc string, c, r rec, returned bool) (*hop, error) {
	k, ok := kindByName[c.K]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", c.K)
	}
	h := &hop{proc: proc, client: c.C, key: c.Key, call: c.T0, ret: never, thermos: c.Th,
		in: input{kind: k, val: string(c.V), off: c.Off, ms: c.Ms}}
	if c.E == "op" {
		if c.Err != "" {
			return nil, nil
		}
		h.ret = c.T1
		h.out = output{present: c.P, val: string(c.O)}
		return h, nil
	}
	if !returned || r.Err != "" {
		// Ambiguous. A GetOrLoad that failed without calling its loader
		// wrote nothing; one that was killed may have.
		if k == kindLoad && returned && !r.L {
			return nil, nil
		}
		return h, nil
	}
	h.ret = r.T1
	h.out = output{present: r.P, val: string(r.O), n: -1}
	if r.N != nil {
		h.out.n = *r.N
	}
	if k == kindLoad && !(r.P && string(r.O) == string(c.V)) {
		// GetOrLoad served a value it did not load: a read.
		h.in = input{kind: kindRead}
		h.out.n = 0
	}
	return h, nil
}
