package tiered

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
)

// Raw routes hold values other programs write as plain bytes. These tests
// exercise them the way such a program would (plain rueidis: SET, APPEND,
// SETRANGE, DEL, PEXPIRE), and their digest revalidation — a SHA-1 of the
// value computed in Redis — after a restart and after a reconnect.

// rawKinds are the tier combinations a raw route can have (it needs Redis).
var rawKinds = []Tier{Redis, Memory | Redis, Disk | Redis, Memory | Disk | Redis}

// rawRig is a cache with one raw route, a plain client, and a way to wait
// until the cache has applied an invalidation.
type rawRig struct {
	t   *testing.T
	s   *redistest.Server
	adm *admin
	ext rueidis.Client
	o   *Options
	c   *Cache

	mu    sync.Mutex
	heard map[string]int
}

func newRawRig(t *testing.T, tiers Tier, user string) *rawRig {
	t.Helper()
	s := redistest.Start(t, nil)
	g := &rawRig{t: t, s: s, adm: newAdmin(t, s), heard: make(map[string]int)}
	g.ext = g.adm.c
	ro := redisOpts(s)
	if user != "" {
		g.adm.addUser(user)
		ro = userOpts(s, user)
	}
	g.o = &Options{Redis: ro, Logger: quietLog,
		Routes: []Route{{Prefix: "raw:", Tiers: tiers, TTL: time.Hour, Beta: -1, Raw: true}}}
	if tiers&Disk != 0 {
		g.o.Dir = t.TempDir()
	}
	g.open()
	return g
}

func (g *rawRig) open() {
	g.t.Helper()
	g.c = openT(g.t, g.o)
	g.c.mem.OnInvalidate(func(keys []string, _ bool) {
		g.mu.Lock()
		for _, k := range keys {
			g.heard[k]++
		}
		g.mu.Unlock()
	})
}

func (g *rawRig) local() bool { return g.o.Routes[0].Tiers&(Memory|Disk) != 0 }

// do runs a command as another program would; on a route with a local tier
// it returns once the cache has applied the command's invalidation, so the
// next read must see its effect.
func (g *rawRig) do(key string, args ...string) {
	g.t.Helper()
	g.mu.Lock()
	before := g.heard[key]
	g.mu.Unlock()
	if err := g.ext.Do(context.Background(), g.ext.B().Arbitrary(args...).Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		g.t.Fatalf("redis %v: %v", args, err)
	}
	if !g.local() {
		return
	}
	waitFor(g.t, 10*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.heard[key] > before
	}, "the invalidation of "+key)
}

// get reads key and returns the value and the tier that answered.
func (g *rawRig) get(key string) ([]byte, bool, Source) {
	g.t.Helper()
	det := &Sources{}
	v, ok, err := g.c.Get(WithSources(context.Background(), det), key)
	if err != nil {
		g.t.Fatalf("Get(%s): %v", key, err)
	}
	src, _ := det.Source(key)
	return v, ok, src
}

// want checks that key reads as v (nil: a miss) twice: the second read is
// answered by the route's fastest tier.
func (g *rawRig) want(key string, v []byte) {
	g.t.Helper()
	tiers := g.o.Routes[0].Tiers
	fastest := SourceRedis
	switch {
	case tiers&Memory != 0:
		fastest = SourceMemory
	case tiers&Disk != 0:
		fastest = SourceDisk
	}
	for i := range 2 {
		got, ok, src := g.get(key)
		switch {
		case v == nil && ok:
			g.t.Fatalf("Get(%s) = %q from %v, want a miss", key, got, src)
		case v != nil && (!ok || string(got) != string(v)):
			g.t.Fatalf("Get(%s) = %q, %v from %v, want %q", key, got, ok, src, v)
		case v != nil && i == 1 && src != fastest:
			g.t.Fatalf("second Get(%s) answered by %v, want %v", key, src, fastest)
		}
	}
}

// redisHolds returns what Redis holds for key (nil: nothing).
func (g *rawRig) redisHolds(key string) []byte {
	g.t.Helper()
	v, err := g.ext.Do(context.Background(), g.ext.B().Get().Key(key).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil
	}
	if err != nil {
		g.t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// TestRawRoundTrip: on every kind of raw route, values go to Redis as the
// bare bytes, bytes written by other programs (SET, APPEND, SETRANGE, DEL)
// are read back exactly — including bytes that look like an envelope,
// binary bytes and the empty value — and loads store raw bytes with a TTL
// and no negative entries.
func TestRawRoundTrip(t *testing.T) {
	for _, tiers := range rawKinds {
		t.Run(tiers.String(), func(t *testing.T) {
			g := newRawRig(t, tiers, "")
			ctx := context.Background()

			// Set stores the bare bytes.
			if err := g.c.Set(ctx, "raw:a", []byte("hello"), 0); err != nil {
				t.Fatal(err)
			}
			if got := g.redisHolds("raw:a"); string(got) != "hello" {
				t.Fatalf("Redis holds %q for a raw Set of hello", got)
			}
			g.want("raw:a", []byte("hello"))

			// Another program's writes, each seen at once after its
			// invalidation.
			g.do("raw:b", "SET", "raw:b", "from-outside")
			g.want("raw:b", []byte("from-outside"))
			g.do("raw:b", "APPEND", "raw:b", "+more")
			g.want("raw:b", []byte("from-outside+more"))
			g.do("raw:b", "SETRANGE", "raw:b", "0", "FROM")
			g.want("raw:b", []byte("FROM-outside+more"))
			g.do("raw:b", "DEL", "raw:b")
			g.want("raw:b", nil)

			// Bytes that happen to be a valid envelope are a value like
			// any other: returned whole, never decoded.
			now := time.Now().UnixNano()
			env := (&envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: 7},
				Payload: []byte("inner")}).Append(nil)
			g.do("raw:env", "SET", "raw:env", string(env))
			g.want("raw:env", env)
			bin := []byte{0, 1, 2, 0xff, 0, '\r', '\n', 0}
			g.do("raw:bin", "SET", "raw:bin", string(bin))
			g.want("raw:bin", bin)
			if err := g.c.Set(ctx, "raw:empty", []byte{}, 0); err != nil {
				t.Fatal(err)
			}
			if got, ok, _ := g.get("raw:empty"); !ok || len(got) != 0 {
				t.Fatalf("Get(raw:empty) = %q, %v; want the empty value", got, ok)
			}

			// Delete removes it from Redis and every tier.
			if err := g.c.Delete(ctx, "raw:a"); err != nil {
				t.Fatal(err)
			}
			if got := g.redisHolds("raw:a"); got != nil {
				t.Fatalf("Redis still holds %q after Delete", got)
			}
			g.want("raw:a", nil)

			// A load stores the bare value with the route's TTL.
			l := &countingLoader{}
			v, ok, err := g.c.GetOrLoad(ctx, "raw:l", l)
			if err != nil || !ok || string(v) != "v:raw:l:1" {
				t.Fatalf("GetOrLoad(raw:l) = %q, %v, %v", v, ok, err)
			}
			if got := g.redisHolds("raw:l"); string(got) != "v:raw:l:1" {
				t.Fatalf("Redis holds %q after a raw load of v:raw:l:1", got)
			}
			pttl, err := g.ext.Do(ctx, g.ext.B().Pttl().Key("raw:l").Build()).AsInt64()
			if err != nil || pttl <= 0 || pttl > time.Hour.Milliseconds() {
				t.Fatalf("PTTL raw:l = %d, %v; want within the route's TTL", pttl, err)
			}
			if v, ok, err := g.c.GetOrLoad(ctx, "raw:l", l); err != nil || !ok || string(v) != "v:raw:l:1" {
				t.Fatalf("second GetOrLoad(raw:l) = %q, %v, %v", v, ok, err)
			}
			if n := l.calls.Load(); n != 1 {
				t.Fatalf("loader called %d times for one key, want 1", n)
			}

			// Raw routes keep no negative entries: nothing is written,
			// and the next read asks the loader again.
			nf := &countingLoader{err: ErrNotFound}
			for range 2 {
				if v, ok, err := g.c.GetOrLoad(ctx, "raw:none", nf); err != nil || ok {
					t.Fatalf("GetOrLoad(raw:none) = %q, %v, %v; want a miss", v, ok, err)
				}
			}
			if n := nf.calls.Load(); n != 2 {
				t.Fatalf("loader called %d times for a missing raw key, want 2 (no negative entry)", n)
			}
			if got := g.redisHolds("raw:none"); got != nil {
				t.Fatalf("Redis holds %q for a missing raw key", got)
			}
		})
	}
}

// rawChange is what another program does to raw keys while the cache
// cannot hear it, by key index: APPEND, SETRANGE (same length), DEL, SET
// of the very same bytes (content unchanged), or nothing.
func rawChange(i int) string {
	switch {
	case i < 60:
		return "append"
	case i < 120:
		return "setrange"
	case i < 150:
		return "del"
	case i < 180:
		return "same"
	}
	return ""
}

const rawKeys = 300

func rawKey(i int) string { return fmt.Sprintf("raw:%03d", i) }
func rawOld(i int) string { return fmt.Sprintf("old-%03d", i) }

// rawNew is what key i holds after rawChange (nil: deleted).
func rawNew(i int) []byte {
	switch rawChange(i) {
	case "append":
		return []byte(rawOld(i) + "+x")
	case "setrange":
		return []byte("OLD" + rawOld(i)[3:])
	case "del":
		return nil
	}
	return []byte(rawOld(i))
}

// changeRaw applies rawChange to every key through the plain client.
func (g *rawRig) changeRaw() {
	g.t.Helper()
	ctx := context.Background()
	var cmds rueidis.Commands
	for i := range rawKeys {
		k := rawKey(i)
		switch rawChange(i) {
		case "append":
			cmds = append(cmds, g.ext.B().Append().Key(k).Value("+x").Build())
		case "setrange":
			cmds = append(cmds, g.ext.B().Setrange().Key(k).Offset(0).Value("OLD").Build())
		case "del":
			cmds = append(cmds, g.ext.B().Del().Key(k).Build())
		case "same":
			cmds = append(cmds, g.ext.B().Set().Key(k).Value(rawOld(i)).Build())
		}
	}
	for _, r := range g.ext.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			g.t.Fatal(err)
		}
	}
}

// checkRaw reads every key after the changes, with a loader that must only
// be called for deleted keys (it finds nothing): changed keys give Redis's
// bytes, unchanged ones (also those rewritten with the same bytes) are
// answered locally.
func (g *rawRig) checkRaw() {
	g.t.Helper()
	ctx := context.Background()
	var loaded []string
	l := LoaderFunc(func(_ context.Context, key string) ([]byte, error) {
		loaded = append(loaded, key)
		return nil, ErrNotFound
	})
	var bad []string
	for i := range rawKeys {
		k := rawKey(i)
		det := &Sources{}
		v, ok, err := g.c.GetOrLoad(WithSources(ctx, det), k, l)
		if err != nil {
			g.t.Fatalf("GetOrLoad(%s): %v", k, err)
		}
		src, _ := det.Source(k)
		want := rawNew(i)
		switch {
		case want == nil && ok:
			bad = append(bad, fmt.Sprintf("%s (deleted while the cache could not hear) = %q from %v, want a miss", k, v, src))
		case want != nil && (!ok || string(v) != string(want)):
			bad = append(bad, fmt.Sprintf("%s (%s) = %q, %v from %v, want %q", k, rawChange(i), v, ok, src, want))
		case rawChange(i) == "append" || rawChange(i) == "setrange":
			if src != SourceRedis {
				bad = append(bad, fmt.Sprintf("changed %s answered by %v, want redis", k, src))
			}
		case want != nil && src != SourceMemory && src != SourceDisk:
			bad = append(bad, fmt.Sprintf("unchanged %s (%q) answered by %v, want a local tier: its digest matches", k, rawChange(i), src))
		}
	}
	if len(bad) > 0 {
		g.t.Errorf("%d of %d keys read wrong, first: %s", len(bad), rawKeys, strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	slices.Sort(loaded)
	var wantLoaded []string
	for i := range rawKeys {
		if rawChange(i) == "del" {
			wantLoaded = append(wantLoaded, rawKey(i))
		}
	}
	if !slices.Equal(loaded, wantLoaded) {
		g.t.Errorf("loader called for %d keys %v, want exactly the %d deleted ones", len(loaded), loaded, len(wantLoaded))
	}
}

// checkPass checks the background pass's counts: each of the 150 changed
// and 150 unchanged keys was dropped or revalidated at least once. (Not
// exactly once: memory and disk copies are checked apart, a drop refuses
// the tickets of keys sharing its generation slot, whose check then runs
// again, and a recheck pass scans the store, where a dropped copy stays
// until its queued delete is flushed.) What is read afterwards is exact:
// see checkRaw.
func checkPass(t *testing.T, revalidated, dropped int64) {
	t.Helper()
	if revalidated < 150 || dropped < 150 {
		t.Errorf("revalidation pass: revalidated %d, dropped %d; want at least 150 each", revalidated, dropped)
	}
}

func (g *rawRig) fill() {
	g.t.Helper()
	ctx := context.Background()
	for i := range rawKeys {
		if err := g.c.Set(ctx, rawKey(i), []byte(rawOld(i)), 0); err != nil {
			g.t.Fatal(err)
		}
	}
	// On disk, not only queued: the revalidation pass scans the store.
	if err := g.c.Flush(ctx); err != nil {
		g.t.Fatal(err)
	}
}

// TestRawRevalidateAfterRestart: a cache with a raw route on disk closes;
// another program appends to, overwrites in place (same length), deletes,
// or rewrites with the same bytes 180 of 300 keys; the cache reopens. The
// background pass checks each local copy's digest in Redis: the 150 whose
// bytes changed are dropped, the 150 others (the 30 rewritten identically
// among them) are kept and answered locally without a load.
func TestRawRevalidateAfterRestart(t *testing.T) {
	for _, tiers := range []Tier{Disk | Redis, Memory | Disk | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			g := newRawRig(t, tiers, "")
			g.fill()
			if err := g.c.Close(); err != nil {
				t.Fatal(err)
			}
			g.changeRaw()
			g.open()
			waitFor(t, 30*time.Second, func() bool { return g.c.Stats().RevalidationPasses > 0 }, "the revalidation pass after the restart")
			st := g.c.Stats()
			checkPass(t, st.Revalidated, st.Dropped)
			g.checkRaw()
		})
	}
}

// TestRawRevalidateAfterReconnect: a cache's tracking connection is cut
// (its user disabled, so it cannot reconnect) while another program changes
// 180 of 300 raw keys as above; the user is enabled again, the cache
// reconnects, and its revalidation pass checks every copy's digest: the
// 150 changed keys are dropped, the 150 others kept and answered locally.
func TestRawRevalidateAfterReconnect(t *testing.T) {
	for _, tiers := range []Tier{Memory | Redis, Disk | Redis, Memory | Disk | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			g := newRawRig(t, tiers, "a")
			g.fill()
			for i := range rawKeys {
				g.want(rawKey(i), []byte(rawOld(i)))
			}
			waitFor(t, 30*time.Second, func() bool { return g.c.Stats().RevalidationPasses > 0 }, "the start-up revalidation pass")
			before := g.c.Stats()
			if n := g.adm.cutUser("a"); n == 0 {
				t.Fatal("CLIENT KILL found no tracking connection of the cache")
			}
			waitFor(t, 10*time.Second, func() bool { return g.c.Stats().EpochBumps > before.EpochBumps }, "the epoch bump of the lost connection")
			g.changeRaw()
			g.adm.addUser("a")
			waitFor(t, 30*time.Second, func() bool { return g.c.Stats().RevalidationPasses > before.RevalidationPasses }, "the revalidation pass after the reconnect")
			st := g.c.Stats()
			checkPass(t, st.Revalidated-before.Revalidated, st.Dropped-before.Dropped)
			g.checkRaw()
		})
	}
}
