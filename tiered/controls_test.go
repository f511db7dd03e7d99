package tiered

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
)

func TestBypassAndSources(t *testing.T) {
	c := openT(t, nil)
	ctx := context.Background()
	l := &countingLoader{}
	if _, _, err := c.GetOrLoad(ctx, "k", l); err != nil {
		t.Fatal(err)
	}

	var d Sources
	dctx := WithSources(ctx, &d)
	if _, ok, _ := c.Get(dctx, "k"); !ok {
		t.Fatal("miss after load")
	}
	if src, ok := d.Source("k"); !ok || src != SourceMemory {
		t.Fatalf("sources say %v, %v; want memory", src, ok)
	}
	if _, _, err := c.GetOrLoad(dctx, "other", l); err != nil {
		t.Fatal(err)
	}
	if src, _ := d.Source("other"); src != SourceLoader {
		t.Fatalf("sources say %v for a loaded key, want loader", src)
	}

	// Bypassing reads goes to the loader even though memory has the key,
	// and (with writes on) stores what it loaded.
	bctx := WithBypass(dctx, BypassReads)
	v, _, err := c.GetOrLoad(bctx, "k", l)
	if err != nil || string(v) != "v:k:3" {
		t.Fatalf("bypassed read = %q, %v; want a fresh load v:k:3", v, err)
	}
	if src, _ := d.Source("k"); src != SourceLoader {
		t.Fatalf("bypass kept the sources? source %v, want loader", src)
	}
	if v, ok := mustGet(t, c, "k"); !ok || string(v) != "v:k:3" {
		t.Fatalf("after a bypassed read the cache holds %q, %v; want the new load", v, ok)
	}
	if _, ok, _ := c.Get(bctx, "k"); ok {
		t.Fatal("Get under BypassReads hit")
	}

	// Bypassing writes stores nothing.
	wctx := WithBypass(ctx, BypassWrites)
	if err := c.Set(wctx, "w", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetOrLoad(wctx, "w2", l); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"w", "w2"} {
		if _, ok := mustGet(t, c, k); ok {
			t.Errorf("%s was stored under BypassWrites", k)
		}
	}
	if len(d.All()) != 2 {
		t.Errorf("sources recorded %v, want k and other", d.All())
	}
}

func TestJitterShortensTTL(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	c := openT(t, &Options{Clock: clk, Rand: rand.NewPCG(1, 2),
		Routes: []Route{{Tiers: Memory, TTL: 100 * time.Second, Jitter: 0.5}}})
	ctx := context.Background()
	for i := range 200 {
		if err := c.Set(ctx, fmt.Sprint(i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	alive := func() int {
		n := 0
		for i := range 200 {
			if _, ok := mustGet(t, c, fmt.Sprint(i)); ok {
				n++
			}
		}
		return n
	}
	clk.Advance(49 * time.Second)
	if n := alive(); n != 200 {
		t.Fatalf("%d of 200 alive at 49s; jitter 0.5 of 100s must keep all until 50s", n)
	}
	clk.Advance(26 * time.Second) // 75s: about half expired
	if n := alive(); n < 20 || n > 180 {
		t.Fatalf("%d of 200 alive at 75s; want expiries spread over 50-100s", n)
	}
	clk.Advance(26 * time.Second) // 101s
	if n := alive(); n != 0 {
		t.Fatalf("%d of 200 alive past the TTL", n)
	}
}

func TestGetManyAndInvalidatePrefix(t *testing.T) {
	s := redistest.Start(t, nil)
	dir := t.TempDir()
	routes := []Route{
		{Prefix: "m:", Tiers: Memory | Redis},
		{Prefix: "d:", Tiers: Memory | Disk | Redis},
		{Prefix: "", Tiers: Memory},
	}
	a := openT(t, &Options{Redis: redisOpts(s), Dir: dir, Routes: routes})
	b := openT(t, &Options{Redis: redisOpts(s), Routes: routes[:1]})
	ctx := context.Background()
	for i := range 50 {
		for _, p := range []string{"m:", "d:", "local:"} {
			if err := a.Set(ctx, fmt.Sprintf("%s%d", p, i), []byte(fmt.Sprint(i)), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	keys := []string{"m:1", "d:2", "local:3", "m:nope", "", "m:4"}
	res := b.GetMany(ctx, keys)
	want := []struct {
		v  string
		ok bool
	}{{"1", true}, {"", false}, {"", false}, {"", false}, {"", false}, {"4", true}}
	for i, r := range res {
		if string(r.Value) != want[i].v || r.OK != want[i].ok {
			t.Errorf("GetMany[%q] = %q, %v, %v; want %q, %v", keys[i], r.Value, r.OK, r.Err, want[i].v, want[i].ok)
		}
	}
	if res[4].Err == nil {
		t.Error("GetMany of an empty key gave no error")
	}
	// b now holds m:1 and m:4 in memory.
	if _, ok := mustGet(t, b, "m:1"); !ok {
		t.Fatal("GetMany did not fill memory")
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	n, err := a.InvalidatePrefix(ctx, "m:")
	if err != nil || n != 50 {
		t.Fatalf("InvalidatePrefix(m:) = %d, %v; want 50", n, err)
	}
	if got, _ := s.Do("DBSIZE"); got != "50" {
		t.Fatalf("DBSIZE after removing m: = %s, want 50 (the d: keys)", got)
	}
	waitFor(t, 5*time.Second, func() bool { _, ok := mustGet(t, b, "m:1"); return !ok }, "b to drop m:1")
	if _, ok := mustGet(t, a, "m:7"); ok {
		t.Fatal("a still serves m:7")
	}
	if n, err := a.InvalidatePrefix(ctx, "d:"); err != nil || n != 50 {
		t.Fatalf("InvalidatePrefix(d:) = %d, %v", n, err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if a.disk != nil {
		found := 0
		_ = a.disk.scan(ctx, "d:", func(string, []byte, int64) error { found++; return nil })
		if found != 0 {
			t.Fatalf("%d d: keys left on disk", found)
		}
	}
	if v, ok := mustGet(t, a, "local:9"); !ok || string(v) != "9" {
		t.Fatalf("memory-only key lost: %q, %v", v, ok)
	}
	// A pattern character in the prefix is literal.
	if n, err := a.InvalidatePrefix(ctx, "*"); err != nil || n != 0 {
		t.Fatalf("InvalidatePrefix(*) = %d, %v; want 0", n, err)
	}
}

func TestLoadLatencyRecorded(t *testing.T) {
	c := openT(t, nil)
	l := &countingLoader{delay: 5 * time.Millisecond}
	if _, _, err := c.GetOrLoad(context.Background(), "k", l); err != nil {
		t.Fatal(err)
	}
	st := c.Stats().Routes[0]
	if st.LoadLatency.Count != 1 || st.LoadLatency.Max < 5*time.Millisecond {
		t.Fatalf("LoadLatency count %d max %v; want 1 sample of at least 5ms", st.LoadLatency.Count, st.LoadLatency.Max)
	}
}
