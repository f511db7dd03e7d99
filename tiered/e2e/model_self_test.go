package e2e

import (
	"strings"
	"testing"
	"time"
)

// The checker must be able to fail: each synthetic history below is either
// one a correct cache can produce (accepted) or one with a stale read, a
// lost write or an impossible Redis reply (refused).

const ms = int64(time.Millisecond)

// w is a plain client's write or read; r a thermos read.
func w(k kind, val string, call, ret int64, o output) hop {
	return hop{proc: "ext", key: "k", in: input{kind: k, val: val}, out: o, call: call * ms, ret: ret * ms}
}

func r(val string, call, ret int64) hop {
	return hop{proc: "T0", key: "k", thermos: true, in: input{kind: kindRead}, out: output{present: true, val: val}, call: call * ms, ret: ret * ms}
}

func rAbsent(call, ret int64) hop {
	return hop{proc: "T0", key: "k", thermos: true, in: input{kind: kindRead}, call: call * ms, ret: ret * ms}
}

func withMs(h hop, n int64) hop { h.in.ms = n; return h }

func withOff(h hop, off int) hop { h.in.off = off; return h }

func ambiguous(h hop) hop { h.ret = never; return h }

func onClient(h hop, c int) hop { h.client = c; return h }

func byProc(h hop, p string) hop { h.proc = p; return h }

func plainRead(val string, call, ret int64) hop {
	h := r(val, call, ret)
	h.proc, h.thermos = "harness", false
	return h
}

func TestCheckerSelf(t *testing.T) {
	del := output{n: -1}
	one, zero := output{n: 1}, output{n: 0}
	tests := []struct {
		name  string
		h     []hop
		legal bool
	}{
		{"read of the current value", []hop{w(kindSet, "a", 0, 10, output{}), r("a", 20, 30)}, true},
		{"read of a value overwritten within δ", []hop{
			w(kindSet, "a", 0, 10, output{}), w(kindSet, "b", 40, 50, output{}), r("a", 120, 130), r("b", 140, 150)}, true},
		{"stale read after δ", []hop{
			w(kindSet, "a", 0, 10, output{}), w(kindSet, "b", 40, 50, output{}), r("a", 400, 410)}, false},
		{"stale forever after an external delete", []hop{
			w(kindSet, "mine", 0, 10, output{}), w(kindDel, "", 11, 12, one), r("mine", 1000, 1001), r("mine", 6000, 6001)}, false},
		{"miss after a delete", []hop{w(kindSet, "a", 0, 10, output{}), w(kindDel, "", 20, 30, del), rAbsent(40, 50)}, true},
		{"lost write: a miss long after a set", []hop{w(kindSet, "a", 0, 10, output{}), rAbsent(400, 410)}, false},
		{"read of a value never written", []hop{w(kindSet, "a", 0, 10, output{}), r("z", 20, 30)}, false},
		{"concurrent writes, either order", []hop{
			onClient(w(kindSet, "a", 0, 100, output{}), 1), onClient(w(kindSet, "b", 0, 100, output{}), 2), r("a", 500, 510), r("a", 600, 610)}, true},
		{"concurrent writes, reads flip back", []hop{
			onClient(w(kindSet, "a", 0, 100, output{}), 1), onClient(w(kindSet, "b", 0, 100, output{}), 2),
			r("a", 500, 510), r("b", 600, 610), r("a", 900, 910)}, false},
		{"append transitions", []hop{
			w(kindSet, "x", 0, 10, output{}), w(kindAppend, "y", 20, 30, output{n: 2}), r("xy", 40, 50)}, true},
		{"read of the value before an append, after δ", []hop{
			w(kindSet, "x", 0, 10, output{}), w(kindAppend, "y", 20, 30, output{n: 2}), r("x", 500, 510)}, false},
		{"append reply that contradicts the state", []hop{
			w(kindSet, "x", 0, 10, output{}), w(kindAppend, "y", 20, 30, output{n: 5})}, false},
		{"setrange pads an absent key", []hop{
			withOff(w(kindSetRange, "ab", 0, 10, output{n: 4}), 2), r("\x00\x00ab", 20, 30)}, true},
		{"value served after its pexpire passed", []hop{
			w(kindSet, "x", 0, 10, output{}), withMs(w(kindExpire, "", 20, 30, one), 100), r("x", 50, 60), r("x", 500, 510)}, false},
		{"miss once a pexpire passed", []hop{
			w(kindSet, "x", 0, 10, output{}), withMs(w(kindExpire, "", 20, 30, one), 100), r("x", 50, 60), rAbsent(200, 210)}, true},
		{"miss before a pexpire could pass", []hop{
			w(kindSet, "x", 0, 10, output{}), withMs(w(kindExpire, "", 20, 30, one), 1000), rAbsent(150, 160)}, false},
		{"pexpire that says 0 on a present key", []hop{
			w(kindSet, "x", 0, 10, output{}), withMs(w(kindExpire, "", 20, 30, zero), 100)}, false},
		{"restart without persistence empties the key", []hop{
			w(kindSet, "x", 0, 10, output{}), {proc: "harness", key: "k", in: input{kind: kindFlush}, call: 100 * ms, ret: 200 * ms},
			rAbsent(300, 310)}, true},
		{"value served after a restart without persistence", []hop{
			w(kindSet, "x", 0, 10, output{}), {proc: "harness", key: "k", in: input{kind: kindFlush}, call: 100 * ms, ret: 200 * ms},
			r("x", 600, 610)}, false},
		{"ambiguous write may have landed", []hop{ambiguous(w(kindSet, "y", 100, 0, output{})), r("y", 2000, 2010)}, true},
		{"ambiguous write may not have landed", []hop{
			w(kindSet, "x", 0, 10, output{}), ambiguous(w(kindSet, "y", 100, 0, output{})), r("x", 2000, 2010)}, true},
		{"ambiguous write that never landed, past its bound", []hop{
			w(kindSet, "x", 0, 10, output{}), ambiguous(w(kindSet, "y", 100, 0, output{})), r("x", 8000, 8010)}, true},
		{"ambiguous write, then a newer one, then a stale read", []hop{
			ambiguous(w(kindSet, "y", 100, 0, output{})), w(kindSet, "z", 11000, 11010, output{}), r("y", 13000, 13010)}, false},
		{"load that was refused", []hop{w(kindSet, "a", 0, 10, output{}), w(kindLoad, "L", 20, 30, output{}), r("a", 500, 510)}, true},
		{"load that landed", []hop{w(kindLoad, "L", 20, 30, output{}), r("L", 500, 510)}, true},
		{"getset sees the old value", []hop{
			w(kindSet, "a", 0, 10, output{}), w(kindGetSet, "b", 20, 30, output{present: true, val: "a"}), r("b", 40, 50)}, true},
		{"getset sees a value Redis never held", []hop{
			w(kindSet, "a", 0, 10, output{}), w(kindGetSet, "b", 20, 30, output{present: true, val: "c"})}, false},
		{"plain reads get no δ", []hop{
			w(kindSet, "a", 0, 10, output{}), w(kindSet, "b", 40, 50, output{}),
			w(kindGetSet, "c", 60, 70, output{present: true, val: "a"})}, false},
	}
	o := checkOptions{delta: 100 * time.Millisecond, ambiguous: 5 * time.Second, timeout: 10 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := check(tt.h, o)
			if got := len(res.violations) == 0; got != tt.legal {
				res.report(t.Logf)
				t.Fatalf("legal = %v, want %v", got, tt.legal)
			}
			if len(res.unknown) != 0 {
				t.Fatalf("%d keys undecided", len(res.unknown))
			}
			if !tt.legal && !strings.Contains(res.violations[0].excerpt, `key "k"`) {
				t.Errorf("excerpt does not name the key:\n%s", res.violations[0].excerpt)
			}
		})
	}
}

// TestCheckerExcerpt checks that a violation names the offending read and
// the write that made it stale.
func TestCheckerExcerpt(t *testing.T) {
	h := []hop{
		w(kindSet, "mine", 0, 10, output{}), w(kindDel, "", 11, 12, output{n: 1}),
		r("mine", 20, 21), r("mine", 1000, 1001),
	}
	res := check(h, checkOptions{delta: 100 * time.Millisecond, ambiguous: 5 * time.Second, timeout: 10 * time.Second, vizDir: t.TempDir()})
	if len(res.violations) != 1 {
		t.Fatalf("%d violations, want 1", len(res.violations))
	}
	ex := res.violations[0].excerpt
	for _, want := range []string{`read → "mine"`, "del → 1", `set "mine"`, "without T0's reads"} {
		if !strings.Contains(ex, want) {
			t.Errorf("excerpt lacks %q:\n%s", want, ex)
		}
	}
	if res.violations[0].viz == "" {
		t.Errorf("no visualization written")
	}
}

// TestCheckerBlame checks that, of two processes whose reads conflict, the
// one stuck on an overwritten value is named, and the class is right.
func TestCheckerBlame(t *testing.T) {
	o := checkOptions{delta: 100 * time.Millisecond, ambiguous: 5 * time.Second, timeout: 10 * time.Second}
	// T1's set and the reactor's overlap: either order is possible, but
	// T1 keeps reading its own value while T2 and the final plain read
	// see the reactor's.
	h := []hop{
		byProc(w(kindSet, "mine", 0, 10, output{}), "T1"), w(kindSet, "theirs", 5, 10, output{}),
		byProc(r("mine", 20, 21), "T1"), byProc(r("theirs", 30, 31), "T2"),
		byProc(r("mine", 500, 501), "T1"), byProc(r("theirs", 600, 601), "T2"), byProc(r("mine", 900, 901), "T1"),
		plainRead("theirs", 2000, 2001),
	}
	res := check(h, o)
	if len(res.violations) != 1 {
		t.Fatalf("%d violations, want 1", len(res.violations))
	}
	v := res.violations[0]
	if v.class != "stale value" || !strings.Contains(v.excerpt, `offending: read → "mine"`) || !strings.Contains(v.excerpt, "T1/0") {
		t.Errorf("class %q, excerpt:\n%s\nwant a stale value read by T1", v.class, v.excerpt)
	}
	// A miss while Redis holds a value is a false miss.
	h = []hop{w(kindSet, "a", 0, 10, output{}), byProc(rAbsent(500, 510), "T1"), plainRead("a", 600, 610)}
	res = check(h, o)
	if len(res.violations) != 1 || res.violations[0].class != "false miss" {
		t.Fatalf("violations %+v, want one false miss", res.violations)
	}
}
