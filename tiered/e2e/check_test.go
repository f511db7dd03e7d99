package e2e

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Figures the checker's δ is built from. testConnWriteTimeout is what every
// thermos process in these tests sets as rueidis ConnWriteTimeout.
const (
	testConnWriteTimeout = 300 * time.Millisecond
	// schedulingSlack is added to the documented bound: on a loaded 2-core
	// machine, with race-enabled binaries, the goroutine that applies an
	// invalidation and the one that timestamps a read can each be late by
	// this much.
	schedulingSlack = 300 * time.Millisecond
)

// stalenessBound is δ: how long after a write a thermos read may still
// return the value that write replaced. It is tracking.Cache.StalenessBound's
// formula (2*KeepAlive + ConnWriteTimeout, KeepAlive defaulting to
// min(1s, ConnWriteTimeout)) plus schedulingSlack.
//
// TODO(lead): replace by the public tiered method for the bound once it
// exists; this is the only place δ is computed.
func stalenessBound(connWriteTimeout time.Duration) time.Duration {
	keepAlive := min(time.Second, connWriteTimeout)
	return 2*keepAlive + connWriteTimeout + schedulingSlack
}

// hop is one operation of a history, as recorded.
type hop struct {
	proc    string // the process that recorded it ("T0", "ext", "harness")
	client  int    // the worker within proc: its operations do not overlap
	key     string
	in      input // in.call/in.ret are filled by check
	out     output
	call    int64 // wall clock, Unix ns
	ret     int64 // never when the outcome is unknown
	thermos bool  // a read through tiered: checked with [call − δ, ret]
}

func (h hop) String() string {
	src := h.proc
	if h.thermos {
		src += " (thermos)"
	}
	return fmt.Sprintf("%s: %s", src, describe(h.in, h.out))
}

// checkOptions are the checker's parameters.
type checkOptions struct {
	delta time.Duration // δ for thermos reads
	// ambiguous bounds when an operation whose outcome is unknown (an
	// error, a timeout, a killed process) may still take effect after its
	// call: the client's timeout plus the longest fault that can hold a
	// command in a socket (a paused server), plus slack. Unbounded
	// ambiguous writes make porcupine's search exponential.
	ambiguous time.Duration
	timeout   time.Duration // per key; a key not decided in time is reported as unknown
	vizDir    string        // where visualizations of violating keys go; empty: none
}

// keyResult is the verdict on one key.
type keyResult struct {
	key     string
	ops     int
	result  porcupine.CheckResult
	excerpt string // for an illegal key
	viz     string // path of its visualization
}

// checkResult is the verdict on a whole history.
type checkResult struct {
	keys       int
	ops        int
	byKind     map[string]int // operation counts, e.g. "thermos read", "ext set"
	violations []keyResult
	unknown    []keyResult
}

// check runs porcupine over h, one partition per key.
func check(h []hop, o checkOptions) checkResult {
	res := checkResult{byKind: map[string]int{}}
	clients := map[string]int{}
	byKey := map[string][]porcupine.Operation{}
	hops := map[string][]hop{}
	for _, x := range h {
		in := x.in
		in.call, in.ret = x.call, x.ret
		if x.thermos && x.in.kind == kindRead {
			in.call -= int64(o.delta)
		}
		in.known = x.ret != never
		if !in.known {
			in.ret = x.call + int64(o.ambiguous)
		}
		cid := x.proc + "/" + fmt.Sprint(x.client)
		if _, ok := clients[cid]; !ok {
			clients[cid] = len(clients)
		}
		label := x.proc
		if x.thermos {
			label = "thermos"
		} else if x.proc != "harness" {
			label = "plain"
		}
		res.byKind[label+" "+x.in.kind.String()]++
		if !in.known {
			res.byKind["ambiguous "+x.in.kind.String()]++
		}
		byKey[x.key] = append(byKey[x.key], porcupine.Operation{
			ClientId: clients[cid], Input: in, Call: in.call, Output: x.out, Return: in.ret, Metadata: cid,
		})
		hops[x.key] = append(hops[x.key], x)
		res.ops++
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range byKey {
			if !yield(k) {
				return
			}
		}
	})
	res.keys = len(keys)
	model := registerModel()
	results := make([]keyResult, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2) // the machine's two cores are shared
	for i, k := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ops := byKey[k]
			r := porcupine.CheckOperationsTimeout(model, ops, o.timeout)
			kr := keyResult{key: k, ops: len(ops), result: r}
			if r == porcupine.Illegal {
				_, info := porcupine.CheckOperationsVerbose(model, ops, o.timeout)
				kr.excerpt = excerpt(k, ops, info, o.delta)
				if o.vizDir != "" {
					p := filepath.Join(o.vizDir, "history-"+safeName(k)+".html")
					if err := porcupine.VisualizePath(model, info, p); err == nil {
						kr.viz = p
					}
				}
			}
			results[i] = kr
		})
	}
	wg.Wait()
	for _, kr := range results {
		switch kr.result {
		case porcupine.Illegal:
			res.violations = append(res.violations, kr)
		case porcupine.Unknown:
			res.unknown = append(res.unknown, kr)
		}
	}
	return res
}

func safeName(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, k)
}

// excerpt names the operation porcupine could not place for key and the
// writes around it. The longest partial linearization ends just before the
// trouble: the first operation (by return time) outside it is the one no
// order explains, most often a read of a value already overwritten.
func excerpt(key string, ops []porcupine.Operation, info porcupine.LinearizationInfo, delta time.Duration) string {
	parts := info.PartialLinearizationsOperations()
	var longest []porcupine.Operation
	for _, p := range parts {
		for _, l := range p {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	type id struct {
		call, ret int64
		cl        int
	}
	placed := map[id]bool{}
	for _, op := range longest {
		placed[id{op.Call, op.Return, op.ClientId}] = true
	}
	var bad *porcupine.Operation
	for i := range ops {
		op := &ops[i]
		if placed[id{op.Call, op.Return, op.ClientId}] {
			continue
		}
		if bad == nil || op.Return < bad.Return {
			bad = op
		}
	}
	if bad == nil {
		return fmt.Sprintf("key %q: illegal, but no operation left out of the longest linearization", key)
	}
	bin := bad.Input.(input)
	var b strings.Builder
	t0 := bin.call
	rel := func(t int64) string {
		if t >= never/2 {
			return "∞"
		}
		return fmt.Sprintf("%+.3fs", float64(t-t0)/1e9)
	}
	fmt.Fprintf(&b, "key %q: no linearization explains\n    %s  [%s, %s] by %v\n", key,
		describe(bin, outputOf(bad.Output)), rel(bin.call), rel(bin.ret), bad.Metadata)
	if bin.kind == kindRead && bin.ret-bin.call >= int64(delta) {
		fmt.Fprintf(&b, "    (a thermos read: its interval starts δ=%v before its call)\n", delta)
	}
	var state string
	if len(longest) > 0 {
		var st regState = absent
		for _, op := range longest {
			next := step(st, op.Input.(input), outputOf(op.Output))
			if len(next) > 0 {
				st = next[len(next)-1]
			}
		}
		state = registerModel().DescribeState([]any{st})
	}
	fmt.Fprintf(&b, "  the last writes before it, and every write within 3δ before it or δ after it\n  (times relative to its interval's start):\n")
	window := int64(3 * delta)
	sorted := slices.Clone(ops)
	slices.SortFunc(sorted, func(x, y porcupine.Operation) int { return cmp.Compare(x.Call, y.Call) })
	var show []porcupine.Operation
	var before []porcupine.Operation // writes that returned before the window
	for _, op := range sorted {
		in := op.Input.(input)
		isBad := op.Call == bad.Call && op.ClientId == bad.ClientId
		switch {
		case in.kind == kindRead && !isBad:
		case op.Call > bin.ret+int64(delta):
		case op.Return < bin.call-window:
			before = append(before, op)
		default:
			show = append(show, op)
		}
	}
	if len(before) > 5 {
		before = before[len(before)-5:]
	}
	show = append(before, show...)
	if len(show) > 40 {
		show = show[:40]
	}
	for _, op := range show {
		in := op.Input.(input)
		mark := "  "
		if op.Call == bad.Call && op.ClientId == bad.ClientId {
			mark = "=>"
		}
		fmt.Fprintf(&b, "  %s [%s, %s] %v: %s\n", mark, rel(in.call), rel(in.ret), op.Metadata, describe(in, outputOf(op.Output)))
	}
	if state != "" {
		fmt.Fprintf(&b, "  state after the longest linearizable prefix (%d of %d operations): %s\n", len(longest), len(ops), state)
	}
	return b.String()
}

// report prints res's figures and every violation to w-like t.Logf.
func (res checkResult) report(logf func(string, ...any)) {
	kinds := slices.Sorted(func(yield func(string) bool) {
		for k := range res.byKind {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, res.byKind[k]))
	}
	logf("history: %d operations on %d keys: %s", res.ops, res.keys, strings.Join(parts, " "))
	logf("history: %d keys with violations, %d keys undecided in time", len(res.violations), len(res.unknown))
	for _, v := range res.violations {
		logf("VIOLATION (%d ops on the key)\n%s", v.ops, v.excerpt)
		if v.viz != "" {
			logf("visualization: %s", v.viz)
		}
	}
	for _, u := range res.unknown {
		logf("undecided: key %q (%d ops)", u.key, u.ops)
	}
}

// vizDir returns where visualizations go: the -history.out flag's
// directory, or dir.
func vizDirOr(dir string) string {
	if *flagOut != "" {
		if err := os.MkdirAll(*flagOut, 0o755); err == nil {
			return *flagOut
		}
	}
	return dir
}
