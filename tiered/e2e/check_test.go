package e2e

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
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
// return the value that write replaced. It is the bound tiered documents,
// Cache.StalenessBound, for a cache with rueidis ConnWriteTimeout
// connWriteTimeout, read off a real cache against addr, plus
// schedulingSlack for a loaded machine.
func stalenessBound(t *testing.T, addr string, connWriteTimeout time.Duration) time.Duration {
	t.Helper()
	c, err := tiered.Open(context.Background(), &tiered.Options{
		Redis:  &rueidis.ClientOption{InitAddress: []string{addr}, ConnWriteTimeout: connWriteTimeout},
		Routes: []tiered.Route{{Prefix: "delta:", Tiers: tiered.Memory | tiered.Redis}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("open a cache to read its StalenessBound: %v", err)
	}
	defer c.Close()
	return c.StalenessBound() + schedulingSlack
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
	faults    []faultSpan   // shown in excerpts near the offending operation
}

// faultSpan is a fault the harness injected, and when.
type faultSpan struct {
	kind       string
	start, end int64
}

// keyResult is the verdict on one key.
type keyResult struct {
	key     string
	ops     int
	result  porcupine.CheckResult
	excerpt string // for an illegal key
	class   string // "stale value", "false miss" or "other"
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
			ClientId: clients[cid], Input: in, Call: in.call, Output: x.out, Return: in.ret,
			Metadata: opMeta{proc: x.proc, worker: x.client, thermos: x.thermos, call: x.call},
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
				kr.excerpt, kr.class = diagnose(k, ops, model, o)
				_, info := porcupine.CheckOperationsVerbose(model, ops, o.timeout)
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

// opMeta identifies an operation's origin in excerpts and in the
// visualization.
type opMeta struct {
	proc    string
	worker  int
	thermos bool
	call    int64 // as recorded: a thermos read's Call is δ earlier
}

func (m opMeta) String() string { return fmt.Sprintf("%s/%d", m.proc, m.worker) }

func metaOf(op porcupine.Operation) opMeta { return op.Metadata.(opMeta) }

func isThermosRead(op porcupine.Operation) bool {
	return metaOf(op).thermos && op.Input.(input).kind == kindRead
}

// culprit is a process whose reads of a key, taken away, leave the key's
// history linearizable up to its first trouble.
type culprit struct {
	proc  string
	first porcupine.Operation // its first read that contradicts everything else
	same  int                 // its later reads that return the same
}

// diagnose explains an illegal key: which process's reads no order
// reconciles with the rest, the first such read, and the writes around it.
// It returns the excerpt and the class of the violation: "stale value" (a
// read of a value already replaced), "false miss" (absent while Redis held
// a value), or "other".
//
// Taking reads away never makes a legal history illegal, so binary searches
// over the thermos reads (by return time) find the first trouble: the
// shortest prefix of reads no linearization allows; then, for each process
// whose reads in that prefix are the trouble, its first read that no
// linearization of the rest allows. A key can hold several troubles: only
// the first is diagnosed.
func diagnose(key string, ops []porcupine.Operation, model porcupine.Model, o checkOptions) (string, string) {
	legal := func(ops []porcupine.Operation) bool {
		return porcupine.CheckOperationsTimeout(model, ops, o.timeout) == porcupine.Ok
	}
	base := slices.DeleteFunc(slices.Clone(ops), isThermosRead)
	if !legal(base) {
		_, info := porcupine.CheckOperationsVerbose(model, base, o.timeout)
		bad := outsideLongest(base, info)
		return fmt.Sprintf("key %q: the writes and plain reads alone are not linearizable (a model or Redis problem)\n%s",
			key, around(bad, ops, o)), "other"
	}
	// The first trouble in time: the shortest prefix of the thermos reads
	// (by return) that no linearization allows.
	var reads []porcupine.Operation
	for _, op := range ops {
		if isThermosRead(op) {
			reads = append(reads, op)
		}
	}
	slices.SortFunc(reads, func(x, y porcupine.Operation) int { return cmp.Compare(x.Return, y.Return) })
	firstIllegal := func(fixed, rs []porcupine.Operation) int { // rs illegal in full
		lo, hi := 1, len(rs)
		for lo < hi {
			mid := (lo + hi) / 2
			if legal(append(slices.Clone(fixed), rs[:mid]...)) {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lo
	}
	n := firstIllegal(base, reads)
	prefix := reads[:n]
	// Whose reads in that prefix are the trouble.
	var procs []string
	for _, op := range prefix {
		if !slices.Contains(procs, metaOf(op).proc) {
			procs = append(procs, metaOf(op).proc)
		}
	}
	var cands []culprit
	for _, p := range procs {
		var mine, others []porcupine.Operation
		for _, op := range prefix {
			if metaOf(op).proc == p {
				mine = append(mine, op)
			} else {
				others = append(others, op)
			}
		}
		fixed := append(slices.Clone(base), others...)
		if !legal(fixed) {
			continue
		}
		c := culprit{proc: p, first: mine[firstIllegal(fixed, mine)-1]}
		for _, r := range reads {
			if metaOf(r).proc == p && r.Return > c.first.Return && outputOf(r.Output) == outputOf(c.first.Output) {
				c.same++
			}
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return fmt.Sprintf("key %q: no single process's reads are the trouble; the history breaks at\n%s", key, around(reads[n-1], ops, o)), "other"
	}
	// A cache stuck on a value keeps serving it: the candidate with the
	// most reads of the same value after its first contradicting one
	// goes first.
	slices.SortStableFunc(cands, func(x, y culprit) int { return cmp.Compare(y.same, x.same) })
	var b strings.Builder
	fmt.Fprintf(&b, "key %q:", key)
	for _, c := range cands {
		fmt.Fprintf(&b, " without %s's reads it is linearizable (its first contradicting read: %s, then %d more alike);",
			c.proc, describe(c.first.Input.(input), outputOf(c.first.Output)), c.same)
	}
	b.WriteString("\n")
	b.WriteString(around(cands[0].first, ops, o))
	class := "stale value"
	if !outputOf(cands[0].first.Output).present {
		class = "false miss"
	}
	return b.String(), class
}

// outsideLongest returns the operation porcupine could not place: the one
// with the earliest return outside the longest partial linearization.
func outsideLongest(ops []porcupine.Operation, info porcupine.LinearizationInfo) porcupine.Operation {
	var longest []porcupine.Operation
	for _, p := range info.PartialLinearizationsOperations() {
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
	bad := ops[0]
	found := false
	for _, op := range ops {
		if !placed[id{op.Call, op.Return, op.ClientId}] && (!found || op.Return < bad.Return) {
			bad, found = op, true
		}
	}
	return bad
}

// around renders bad with the writes near it (the last five before, and all
// within 3δ before and δ after), and every process's reads near it in runs
// of equal results. Times are relative to bad's interval's start.
func around(bad porcupine.Operation, ops []porcupine.Operation, o checkOptions) string {
	delta := o.delta
	bin := bad.Input.(input)
	var b strings.Builder
	t0 := metaOf(bad).call
	rel := func(t int64) string {
		if t >= never/2 {
			return "∞"
		}
		return fmt.Sprintf("%+.3fs", float64(t-t0)/1e9)
	}
	fmt.Fprintf(&b, "  offending: %s  [%s, %s] by %v, called at %s", describe(bin, outputOf(bad.Output)), rel(t0), rel(bin.ret), bad.Metadata,
		time.Unix(0, t0).Format("15:04:05.000"))
	if isThermosRead(bad) {
		fmt.Fprintf(&b, " (a thermos read: checked against [call − δ, return], δ=%v)", delta)
	}
	for _, f := range o.faults {
		if f.end >= t0-int64(10*time.Second) && f.start <= bin.ret+int64(delta) {
			fmt.Fprintf(&b, "\n  fault %s [%s, %s]", f.kind, rel(f.start), rel(f.end))
		}
	}
	b.WriteString("\n  writes: the last five before, and all from 3δ before to δ after it (times from its call):\n")
	window := int64(3 * delta)
	sorted := slices.Clone(ops)
	slices.SortFunc(sorted, func(x, y porcupine.Operation) int { return cmp.Compare(x.Call, y.Call) })
	var show, before []porcupine.Operation
	for _, op := range sorted {
		in := op.Input.(input)
		switch {
		case in.kind == kindRead:
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
		fmt.Fprintf(&b, "     [%s, %s] %v: %s\n", rel(in.call), rel(in.ret), op.Metadata, describe(in, outputOf(op.Output)))
	}
	b.WriteString("  reads from 3δ before to 3δ after it (runs of equal results, by process):\n")
	type run struct {
		who         string
		out         output
		n           int
		first, last int64
	}
	var runs []run
	open := map[string]int{} // process → index of its current run
	for _, op := range sorted {
		if op.Input.(input).kind != kindRead || op.Return < bin.call-window || op.Call > bin.ret+window {
			continue
		}
		who := metaOf(op).proc
		if !metaOf(op).thermos {
			who += " (plain)"
		}
		out := outputOf(op.Output)
		call := metaOf(op).call
		if i, ok := open[who]; ok && runs[i].out == out {
			runs[i].n++
			runs[i].last = call
			continue
		}
		open[who] = len(runs)
		runs = append(runs, run{who: who, out: out, n: 1, first: call, last: call})
	}
	if len(runs) > 40 {
		runs = runs[:40]
	}
	for _, r := range runs {
		fmt.Fprintf(&b, "     %s: %s ×%d, called from %s to %s\n", r.who, describe(input{kind: kindRead, known: true}, r.out), r.n, rel(r.first), rel(r.last))
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
	tally := map[string]int{}
	for _, v := range res.violations {
		route, _, _ := strings.Cut(v.key, ":")
		tally[route+": "+v.class]++
	}
	if len(tally) > 0 {
		var ts []string
		for _, k := range slices.Sorted(maps.Keys(tally)) {
			ts = append(ts, fmt.Sprintf("%s=%d", k, tally[k]))
		}
		logf("history: violating keys by route prefix and class: %s", strings.Join(ts, ", "))
	}
	for _, v := range res.violations {
		logf("VIOLATION, %s (%d ops on the key)\n%s", v.class, v.ops, v.excerpt)
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
