package workload

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Op is one operation of a read/write mix.
type Op uint8

// Operations of the YCSB core workloads used here.
const (
	Read            Op = iota // read one key
	Update                    // overwrite one key
	ReadModifyWrite           // read a key, then overwrite it
)

// String returns the operation's YCSB name.
func (o Op) String() string {
	switch o {
	case Read:
		return "read"
	case Update:
		return "update"
	case ReadModifyWrite:
		return "readmodifywrite"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Mix is a read/write mix: the share of each operation. Shares sum to 1.
type Mix struct {
	Name            string
	Read            float64
	Update          float64
	ReadModifyWrite float64
}

// MixByName returns YCSB core workload name ("A", "B", "C" or "F", any
// case; empty means C): A is update heavy (50 % reads, 50 % updates), B read
// mostly (95 % reads, 5 % updates), C read only, F 50 % reads and 50 %
// read-modify-writes. D and E need inserts and scans and are not offered.
func MixByName(name string) (Mix, error) {
	switch strings.ToUpper(name) {
	case "A":
		return Mix{Name: "A", Read: 0.5, Update: 0.5}, nil
	case "B":
		return Mix{Name: "B", Read: 0.95, Update: 0.05}, nil
	case "C", "":
		return Mix{Name: "C", Read: 1}, nil
	case "F":
		return Mix{Name: "F", Read: 0.5, ReadModifyWrite: 0.5}, nil
	}
	return Mix{}, fmt.Errorf("%w: unknown YCSB mix %q (want A, B, C or F)", ErrInvalid, name)
}

// Validate reports whether the shares are in [0, 1] and sum to 1.
func (m Mix) Validate() error {
	for _, f := range []float64{m.Read, m.Update, m.ReadModifyWrite} {
		if !(f >= 0 && f <= 1) {
			return fmt.Errorf("%w: mix %s share %v outside [0, 1]", ErrInvalid, m.Name, f)
		}
	}
	if s := m.Read + m.Update + m.ReadModifyWrite; s < 0.999999 || s > 1.000001 {
		return fmt.Errorf("%w: mix %s shares sum to %v, want 1", ErrInvalid, m.Name, s)
	}
	return nil
}

// Ops draws operations of a Mix.
type Ops struct {
	m Mix
	r *rand.Rand
}

// NewOps returns an operation chooser for m drawing from r.
func NewOps(m Mix, r *rand.Rand) (*Ops, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &Ops{m: m, r: r}, nil
}

// Next returns the next operation.
func (o *Ops) Next() Op {
	u := o.r.Float64()
	switch {
	case u < o.m.Read:
		return Read
	case u < o.m.Read+o.m.Update:
		return Update
	}
	return ReadModifyWrite
}
