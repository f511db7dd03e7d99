package e2e

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The register model the histories are checked against, one register per
// key (porcupine partitions by key). Its state is what Redis holds for the
// key; every write, whoever made it, is a transition at one instant inside
// its [call, return] interval. A thermos read may return any value that was
// current at some instant in [call − δ, return]: the checker gives thermos
// reads the interval [call − δ, return] before checking, writes and reads
// by plain clients keep theirs.
//
// Expiry (PEXPIRE) needs time, which a porcupine step does not see: the
// state carries the window [expLo, expHi] in which the key disappears, and a
// read is judged against its own interval. That is an over-approximation
// (a read may be accepted that a stricter model would refuse), never a
// false alarm.

// kind is what an operation does to a key.
type kind uint8

const (
	kindRead     kind = iota + 1 // a thermos Get, or GetOrLoad served a value it did not load
	kindSet                      // SET, MSET, EVAL SET, redis-cli SET, tiered Set
	kindDel                      // DEL, EVAL DEL, redis-cli DEL, tiered Delete
	kindExpire                   // PEXPIRE ms
	kindAppend                   // APPEND suffix (raw routes)
	kindSetRange                 // SETRANGE off s (raw routes)
	kindLoad                     // GetOrLoad whose own loader produced the value: a write that may not have reached Redis
	kindFlush                    // Redis restarted without persistence: every key absent
	kindGetSet                   // EVAL GET+SET: a strict read of the old value and a write
)

var kindNames = map[kind]string{
	kindRead: "read", kindSet: "set", kindDel: "del", kindExpire: "pexpire", kindAppend: "append",
	kindSetRange: "setrange", kindLoad: "load", kindFlush: "flush", kindGetSet: "getset",
}

func (k kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "kind" + strconv.Itoa(int(k))
}

// never is the return time of an operation whose outcome is unknown and
// that has no bound: the checker replaces it by a bound (see ambiguousFor).
const never = math.MaxInt64

// input is an operation's input as the model sees it.
type input struct {
	kind kind
	val  string // written value, suffix, or SETRANGE bytes
	off  int    // SETRANGE offset
	ms   int64  // PEXPIRE milliseconds
	// call and ret are the operation's interval as checked (a thermos
	// read's call already moved back by δ), for expiry reasoning.
	call, ret int64
	known     bool // the output is known (the operation returned)
}

// output is an operation's result.
type output struct {
	present bool   // a read or GETSET found a value
	val     string // the value read (payload for envelope routes)
	n       int64  // APPEND/SETRANGE length, PEXPIRE/DEL integer reply; -1 when the client gave none (tiered Delete)
}

// regState is a register: Redis's view of one key.
type regState struct {
	val     string
	present bool
	// The key disappears at some instant in [expLo, expHi]; 0 means no
	// expiry.
	expLo, expHi int64
}

// expirySlack covers Redis's millisecond expiry clock (it stores
// mstime()+ms and expires when now_ms > when).
const expirySlack = 2_000_000

func satAdd(a, b int64) int64 {
	if a > 0 && b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// mayBePresent: at some instant in [call, ret] the key may still hold val.
func (s regState) mayBePresent(call int64) bool {
	return s.present && (s.expHi == 0 || call < s.expHi)
}

// mayBeAbsent: at some instant in [call, ret] the key may be gone.
func (s regState) mayBeAbsent(ret int64) bool {
	return !s.present || (s.expLo != 0 && ret >= s.expLo)
}

var absent = regState{}

// step returns every state the register can be in after in with out. A
// write whose outcome is unknown may also never have happened.
func step(s regState, in input, out output) []regState {
	next := applyStep(s, in, out)
	if !in.known && in.kind != kindRead && in.kind != kindFlush && !slices.Contains(next, s) {
		next = append(next, s)
	}
	return next
}

func applyStep(s regState, in input, out output) []regState {
	switch in.kind {
	case kindRead:
		if out.present {
			if s.mayBePresent(in.call) && s.val == out.val {
				return []regState{s}
			}
			return nil
		}
		if s.mayBeAbsent(in.ret) {
			return []regState{s}
		}
		return nil
	case kindSet:
		return []regState{{val: in.val, present: true}}
	case kindDel:
		if in.known && out.n >= 0 {
			if out.n == 1 && !s.mayBePresent(in.call) || out.n == 0 && !s.mayBeAbsent(in.ret) {
				return nil
			}
		}
		return []regState{absent}
	case kindFlush:
		return []regState{absent}
	case kindExpire:
		var next []regState
		if (!in.known || out.n == 1) && s.mayBePresent(in.call) {
			e := s
			e.expLo = in.call + in.ms*1e6 - expirySlack
			e.expHi = satAdd(satAdd(in.ret, in.ms*1e6), expirySlack)
			next = append(next, e)
		}
		if (!in.known || out.n == 0) && s.mayBeAbsent(in.ret) {
			next = append(next, absent)
		}
		return next
	case kindAppend, kindSetRange:
		apply := func(old string) string {
			if in.kind == kindAppend {
				return old + in.val
			}
			return setRange(old, in.off, in.val)
		}
		var next []regState
		if s.mayBePresent(in.call) {
			v := apply(s.val)
			if !in.known || out.n == int64(len(v)) {
				next = append(next, regState{val: v, present: true, expLo: s.expLo, expHi: s.expHi})
			}
		}
		if s.mayBeAbsent(in.ret) {
			v := apply("")
			if !in.known || out.n == int64(len(v)) {
				next = append(next, regState{val: v, present: true})
			}
		}
		return next
	case kindLoad:
		// The fenced write may have been refused, or Redis unreachable
		// (the load then stays local): Redis holds v, or what it held.
		return []regState{s, {val: in.val, present: true}}
	case kindGetSet:
		if in.known {
			if out.present && !(s.mayBePresent(in.call) && s.val == out.val) || !out.present && !s.mayBeAbsent(in.ret) {
				return nil
			}
		}
		return []regState{{val: in.val, present: true}}
	}
	panic(fmt.Sprintf("e2e: model: unknown kind %v", in.kind))
}

// setRange is Redis's SETRANGE: old padded with zero bytes to off, then s
// written at off.
func setRange(old string, off int, s string) string {
	b := []byte(old)
	for len(b) < off+len(s) {
		b = append(b, 0)
	}
	copy(b[off:], s)
	return string(b)
}

// registerModel is the porcupine model over one key's operations.
func registerModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{absent} },
		Step: func(st, in, out any) []any {
			var o output
			if out != nil {
				o = out.(output)
			}
			var res []any
			for _, n := range step(st.(regState), in.(input), o) {
				res = append(res, n)
			}
			return res
		},
		Hash: func(st any) uint64 {
			s := st.(regState)
			h := fnv.New64a()
			h.Write([]byte(s.val))
			x := h.Sum64()
			if s.present {
				x ^= 0x9e3779b97f4a7c15
			}
			return x ^ uint64(s.expLo)*31 ^ uint64(s.expHi)*17
		},
		DescribeOperation: func(in, out any) string { return describe(in.(input), outputOf(out)) },
		DescribeState: func(st any) string {
			s := st.(regState)
			if !s.present {
				return "absent"
			}
			if s.expLo != 0 {
				return fmt.Sprintf("%q (expiring)", s.val)
			}
			return strconv.Quote(s.val)
		},
	}
	return nm.ToModel()
}

func outputOf(out any) output {
	if out == nil {
		return output{}
	}
	return out.(output)
}

// describe renders an operation for excerpts and the visualization.
func describe(in input, out output) string {
	res := func(s string) string {
		if !in.known {
			return s + " → ?"
		}
		return s
	}
	switch in.kind {
	case kindRead:
		if out.present {
			return fmt.Sprintf("read → %q", out.val)
		}
		return "read → absent"
	case kindSet:
		return res(fmt.Sprintf("set %q", in.val))
	case kindLoad:
		return res(fmt.Sprintf("load %q", in.val))
	case kindDel:
		if in.known && out.n >= 0 {
			return fmt.Sprintf("del → %d", out.n)
		}
		return res("del")
	case kindFlush:
		return "redis restart without persistence"
	case kindExpire:
		if in.known {
			return fmt.Sprintf("pexpire %d → %d", in.ms, out.n)
		}
		return res(fmt.Sprintf("pexpire %d", in.ms))
	case kindAppend:
		if in.known {
			return fmt.Sprintf("append %q → %d", in.val, out.n)
		}
		return res(fmt.Sprintf("append %q", in.val))
	case kindSetRange:
		if in.known {
			return fmt.Sprintf("setrange %d %q → %d", in.off, in.val, out.n)
		}
		return res(fmt.Sprintf("setrange %d %q", in.off, in.val))
	case kindGetSet:
		if !in.known {
			return res(fmt.Sprintf("getset %q", in.val))
		}
		if out.present {
			return fmt.Sprintf("getset %q → %q", in.val, out.val)
		}
		return fmt.Sprintf("getset %q → absent", in.val)
	}
	return strings.TrimSpace(fmt.Sprintf("%v %q", in.kind, in.val))
}
