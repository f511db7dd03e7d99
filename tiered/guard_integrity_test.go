package tiered

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
)

// What a local copy is checked against before it is served: its
// envelope's checksum and signature, on disk as in Redis, and its key's
// remaining TTL in Redis after the cache could not hear a PEXPIRE.

// TestGuardTTLCapAfterRestart: while a cache is closed (or cannot hear
// Redis), another program shortens a key's TTL with PEXPIRE. The local
// copy still says it lives an hour; once Redis has expired the key it must
// not be served. Redis's active expiry is off, so nothing but the cache's
// own check ends the copy: an expired key is only deleted, and its
// invalidation sent, when someone touches it.
func TestGuardTTLCapAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tiers Tier
		raw   bool
		// how the cache stops hearing Redis: "restart" (Close, then Open
		// on the same directory) or "reconnect" (its user cut off, then
		// let back in). pending keeps the disk write queued (never
		// flushed), where only reads check it: the background pass
		// scans what is stored.
		how     string
		pending bool
	}{
		{"memory+disk+redis/restart", Memory | Disk | Redis, false, "restart", false},
		{"disk+redis/restart", Disk | Redis, false, "restart", false},
		{"raw disk+redis/restart", Disk | Redis, true, "restart", false},
		{"memory+redis/reconnect", Memory | Redis, false, "reconnect", false},
		{"raw memory+redis/reconnect", Memory | Redis, true, "reconnect", false},
		{"disk+redis/reconnect", Disk | Redis, false, "reconnect", false},
		{"disk+redis/reconnect, pending", Disk | Redis, false, "reconnect", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits seconds for an expiry
			s := redistest.Start(t, &redistest.Options{Args: []string{"--enable-debug-command", "local"}})
			adm := newAdmin(t, s)
			adm.mustDo("DEBUG", "SET-ACTIVE-EXPIRE", "0")
			adm.addUser("a")
			ctx := context.Background()
			o := &Options{Redis: userOpts(s, "a"), Logger: quietLog,
				Routes: []Route{{Prefix: "t:", Tiers: tc.tiers, TTL: time.Hour, Beta: -1, Raw: tc.raw}}}
			if tc.tiers&Disk != 0 {
				o.Dir = t.TempDir()
			}
			if tc.pending {
				o.WriteBehind = time.Hour
			}
			c := openT(t, o)
			const key = "t:1"
			if err := c.Set(ctx, key, []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			if _, ok := mustGet(t, c, key); !ok {
				t.Fatal("miss after Set")
			}
			if !tc.pending {
				// On disk, not only queued, so the background pass sees it.
				if err := c.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, 10*time.Second, "the start-up revalidation pass", func() bool { return c.Stats().RevalidationPasses > 0 })
			before := c.Stats()
			const ttl = 3 * time.Second
			var expires time.Time
			pexpire := func() {
				if n, err := adm.do("PEXPIRE", key, fmt.Sprint(ttl.Milliseconds())).AsInt64(); err != nil || n != 1 {
					t.Fatalf("PEXPIRE: %d, %v", n, err)
				}
				expires = time.Now().Add(ttl) // Redis expires the key by then
			}
			switch tc.how {
			case "restart":
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				pexpire()
				c = openT(t, o)
				before = Stats{}
			case "reconnect":
				if n := adm.cutUser("a"); n == 0 {
					t.Fatal("CLIENT KILL found no tracking connection")
				}
				waitUntil(t, 10*time.Second, "the epoch bump", func() bool { return c.Stats().EpochBumps > before.EpochBumps })
				pexpire()
				adm.addUser("a")
			}
			waitUntil(t, 10*time.Second, "the revalidation pass", func() bool {
				return c.Stats().RevalidationPasses > before.RevalidationPasses
			})
			// A pass with nothing to check (the pending case) ends without
			// asking Redis: wait until reads can reach it again.
			waitUntil(t, 10*time.Second, "a read that Redis answers", func() bool {
				_, _, err := c.Get(ctx, key)
				return err == nil
			})
			// Once Redis has surely expired the key, no tier may answer.
			// (The margin covers the copy's own cap, anchored when the
			// reply is decoded: up to a round trip and a scheduling delay
			// late.)
			waitUntil(t, ttl+10*time.Second, "the key's expiry in Redis", func() bool { return time.Now().After(expires.Add(time.Second)) })
			for range 2 {
				det := &Sources{}
				if v, ok, err := c.Get(WithSources(ctx, det), key); err != nil || ok {
					src, _ := det.Source(key)
					t.Fatalf("Get(%s) = %q, %v, %v from %v, a second after Redis expired the key (PEXPIRE while the cache could not hear)", key, v, ok, err, src)
				}
			}
		})
	}
}

// TestGuardChecksums: an envelope changed after it was written (one
// payload byte flipped, so its checksum no longer matches) is refused, never
// served: read from Redis on an unsigned route, and read from disk, where
// it sits in a valid store record (only the envelope's own checksum can
// tell), at warm-up and on a disk read.
func TestGuardChecksums(t *testing.T) {
	ctx := context.Background()
	flip := func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[len(b)-1] ^= 0x20
		return b
	}
	t.Run("redis", func(t *testing.T) {
		g := newRig(t, Memory|Disk|Redis, false)
		const key = "k:1"
		g.external(key, []byte("value"))
		raw, err := g.ext.Do(ctx, g.ext.B().Get().Key(key).Build()).AsBytes()
		if err != nil {
			t.Fatal(err)
		}
		g.c.forgetLocal(key) // the bytes come from Redis, not a local copy
		if err := g.ext.Do(ctx, g.ext.B().Set().Key(key).Value(string(flip(raw))).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if v, ok, err := g.c.Get(ctx, key); err != nil || ok {
				t.Fatalf("Get(%s) of a corrupted envelope = %q, %v, %v; want a miss", key, v, ok, err)
			}
		}
		if n := g.c.Stats().Routes[0].IntegrityFailures; n != 2 {
			t.Errorf("IntegrityFailures = %d after two reads of a corrupted envelope, want 2", n)
		}
		// A load replaces the refused bytes.
		v, ok, err := g.c.GetOrLoad(ctx, key, LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("loaded"), nil }))
		if err != nil || !ok || string(v) != "loaded" {
			t.Fatalf("GetOrLoad over a corrupted envelope = %q, %v, %v; want the loader's value", v, ok, err)
		}
	})
	for _, tiers := range []Tier{Disk, Memory | Disk} {
		t.Run("disk/"+tiers.String(), func(t *testing.T) {
			opts := &Options{Dir: t.TempDir(), Logger: quietLog,
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			const key = "k:1"
			c := openT(t, opts)
			if err := c.Set(ctx, key, []byte("value"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			se, ok, err := db.Get(ctx, key)
			if err != nil || !ok {
				t.Fatalf("store Get(%s) = %v, %v", key, ok, err)
			}
			if err := db.SetExpiry(ctx, key, flip(se.Value), se.Expiry); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			c = openT(t, opts)
			for range 2 {
				if v, ok, err := c.Get(ctx, key); err != nil || ok {
					t.Fatalf("Get(%s) of a corrupted envelope on disk = %q, %v, %v; want a miss", key, v, ok, err)
				}
			}
			if n := c.Stats().DiskCorrupt; n != 1 {
				t.Errorf("DiskCorrupt = %d, want 1: the entry refused once, then removed", n)
			}
		})
	}
}

// TestGuardDiskSignature: on a signed route, a value altered on disk (its
// payload changed and its checksum fixed, as someone who knows the format
// but not the secret can do, in a valid store record) is refused at
// warm-up and on a disk read, never served: the disk is no more trusted
// than Redis. On routes with Redis the altered copy keeps the version Redis
// holds, so only the signature tells.
func TestGuardDiskSignature(t *testing.T) {
	for _, tiers := range []Tier{Disk, Memory | Disk, Disk | Redis, Memory | Disk | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			ctx := context.Background()
			opts := &Options{Dir: t.TempDir(), Logger: quietLog, Signing: secRing(1, 1),
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			if tiers&Redis != 0 {
				opts.Redis = redisOpts(redistest.Start(t, nil))
			}
			const key = "k:1"
			c := openT(t, opts)
			if err := c.Set(ctx, key, []byte("value"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			se, ok, err := db.Get(ctx, key)
			if err != nil || !ok {
				t.Fatalf("store Get(%s) = %v, %v", key, ok, err)
			}
			forged := reencode(t, se.Value, func(e *envelope.Entry) { e.Payload = []byte("forge") })
			if err := db.SetExpiry(ctx, key, forged, se.Expiry); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			c = openT(t, opts)
			for range 2 {
				v, ok, err := c.Get(ctx, key)
				switch {
				case err != nil:
					t.Fatalf("Get(%s): %v", key, err)
				case ok && string(v) == "forge":
					t.Fatalf("Get(%s) served the value forged on disk", key)
				case tiers&Redis != 0 && (!ok || string(v) != "value"):
					t.Fatalf("Get(%s) = %q, %v; want Redis's value", key, v, ok)
				case tiers&Redis == 0 && ok:
					t.Fatalf("Get(%s) = %q; want a miss: the only copy was forged", key, v)
				}
			}
			// Refused once, then removed. On routes with Redis the
			// background pass may refuse it once more: it scans the store,
			// where the entry stays until its queued delete is flushed.
			if n := c.Stats().DiskCorrupt; n < 1 || n > 1 && tiers&Redis == 0 {
				t.Errorf("DiskCorrupt = %d, want 1", n)
			}
		})
	}
}
