package tiered

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/herd"
	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tracking"
)

const secPassword = "tiered-sec-secret"

// secRing returns a keyring whose current key is id, holding every id in
// ids with a secret derived from the id.
func secRing(current byte, ids ...byte) *Keyring {
	r := &Keyring{Current: current, Secrets: map[byte][]byte{}}
	for _, id := range ids {
		r.Secrets[id] = []byte("hmac-secret-" + strconv.Itoa(int(id)) + "-0123456789abcdef")
	}
	return r
}

// secSetup is a protected server and the client options that reach it.
type secSetup struct {
	name string
	srv  *redistest.Server
	opts rueidis.ClientOption
}

// secUser may use the keys of the "app:" route, the herd's lock keys and
// notification channels, and every command but the @admin ones.
var secUser = []string{"on", ">" + secPassword, "~app:*", "~" + herd.DefaultLockPrefix + "*",
	"&" + herd.DefaultChannelPrefix + "*", "+@all", "-@admin"}

func secSetups(t *testing.T) []secSetup {
	t.Helper()
	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", secPassword}})
	acl := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + secPassword}})
	acl.SetUser("app", secUser...)
	tl := redistest.StartTLS(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + secPassword}})
	tl.SetUser("app", secUser...)
	return []secSetup{
		{"requirepass", pass, rueidis.ClientOption{InitAddress: []string{pass.Addr()}, Password: secPassword}},
		{"acl-user", acl, rueidis.ClientOption{InitAddress: []string{acl.Addr()}, Username: "app", Password: secPassword}},
		{"tls+acl-user", tl.Server, rueidis.ClientOption{InitAddress: []string{tl.TLSAddr()}, Username: "app",
			Password: secPassword, TLSConfig: tl.ClientConfig()}},
	}
}

// secOpen opens a cache with one "app:" route over ro, signing with ring.
func secOpen(t *testing.T, ro rueidis.ClientOption, tiers Tier, ring *Keyring, logs *bytes.Buffer) *Cache {
	t.Helper()
	o := &Options{
		Redis:   &ro,
		Routes:  []Route{{Prefix: "app:", Tiers: tiers}},
		Signing: ring,
		Logger:  slog.New(slog.DiscardHandler),
	}
	if tiers&Disk != 0 {
		o.Dir = t.TempDir()
	}
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return openT(t, o)
}

func secRoute(c *Cache, prefix string) RouteStats {
	for _, r := range c.Stats().Routes {
		if r.Prefix == prefix {
			return r
		}
	}
	return RouteStats{}
}

// The core paths work through a password, a restricted ACL user and TLS,
// with signed values, between two instances: a write on one is read by the
// other, a later write invalidates the other's memory, a load happens once
// for both, and a delete reaches both.
func TestSecureRedisCorePaths(t *testing.T) {
	ring := secRing(1, 1)
	for _, s := range secSetups(t) {
		t.Run(s.name, func(t *testing.T) {
			var logs bytes.Buffer
			a := secOpen(t, s.opts, Memory|Redis|Disk, ring, &logs)
			b := secOpen(t, s.opts, Memory|Redis, ring, &logs)
			ctx := t.Context()

			if err := a.Set(ctx, "app:1", []byte("v1"), time.Minute); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if v, ok := mustGet(t, b, "app:1"); !ok || string(v) != "v1" {
				t.Fatalf("other instance Get = %q, %v; want v1", v, ok)
			}
			if err := a.Set(ctx, "app:1", []byte("v2"), time.Minute); err != nil {
				t.Fatalf("Set: %v", err)
			}
			waitFor(t, 5*time.Second, func() bool { v, _ := mustGet(t, b, "app:1"); return string(v) == "v2" },
				"the other instance to see v2")

			var loads atomic.Int64
			load := LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
				loads.Add(1)
				return []byte("loaded:" + key), nil
			})
			for _, c := range []*Cache{a, b} {
				v, ok, err := c.GetOrLoad(ctx, "app:2", load)
				if err != nil || !ok || string(v) != "loaded:app:2" {
					t.Fatalf("GetOrLoad = %q, %v, %v", v, ok, err)
				}
			}
			if n := loads.Load(); n != 1 {
				t.Errorf("loader ran %d times for two instances, want 1", n)
			}

			if err := b.Delete(ctx, "app:1"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			waitFor(t, 5*time.Second, func() bool { _, ok := mustGet(t, a, "app:1"); return !ok },
				"the delete to reach the other instance")
			for _, c := range []*Cache{a, b} {
				if n := secRoute(c, "app:").IntegrityFailures; n != 0 {
					t.Errorf("integrity failures = %d on honest traffic", n)
				}
			}
			if strings.Contains(logs.String(), secPassword) {
				t.Errorf("logs carry the password")
			}
		})
	}
}

// A wrong password, an unknown user and an untrusted certificate fail Open
// at once with a clear error that does not carry the secret, whether the
// route tracks (memory + redis) or not (redis only).
func TestSecureOpenRefused(t *testing.T) {
	setups := secSetups(t)
	other := redistest.NewCA(t)
	tests := []struct {
		setup  int
		name   string
		change func(o *rueidis.ClientOption)
		want   string
	}{
		{0, "wrong password", func(o *rueidis.ClientOption) { o.Password = "wrong-" + secPassword }, "WRONGPASS"},
		{1, "unknown user", func(o *rueidis.ClientOption) { o.Username = "nobody" }, "WRONGPASS"},
		{2, "untrusted certificate", func(o *rueidis.ClientOption) { o.TLSConfig = other.ClientConfig() }, "certificate"},
		{2, "system roots", func(o *rueidis.ClientOption) { o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} }, "certificate"},
	}
	for _, tt := range tests {
		for _, tiers := range []Tier{Memory | Redis, Redis} {
			s := setups[tt.setup]
			ro := s.opts
			tt.change(&ro)
			var logs bytes.Buffer
			start := time.Now()
			_, err := Open(t.Context(), &Options{Redis: &ro, Routes: []Route{{Prefix: "app:", Tiers: tiers}},
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			took := time.Since(start)
			t.Logf("%s/%s (%s): error after %v: %v", s.name, tt.name, tiers, took, err)
			switch {
			case err == nil:
				t.Errorf("%s (%s): Open succeeded", tt.name, tiers)
				continue
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("%s (%s): error %q does not say %q", tt.name, tiers, err, tt.want)
			case strings.Contains(err.Error(), secPassword) || strings.Contains(logs.String(), secPassword):
				t.Errorf("%s (%s): the password leaks into the error or the logs", tt.name, tiers)
			}
			if took > 3*time.Second {
				t.Errorf("%s (%s): Open took %v to fail", tt.name, tiers, took)
			}
		}
	}
}

// An ACL user that may not read a tracked prefix is refused at Open, with
// the prefix named.
func TestSecureACLRefusesPrefix(t *testing.T) {
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + secPassword}})
	srv.SetUser("app", secUser...)
	ro := rueidis.ClientOption{InitAddress: []string{srv.Addr()}, Username: "app", Password: secPassword}
	_, err := Open(t.Context(), &Options{Redis: &ro, Logger: slog.New(slog.DiscardHandler),
		Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis}, {Prefix: "billing:", Tiers: Memory | Redis}}})
	if !errors.Is(err, tracking.ErrACL) || !strings.Contains(err.Error(), `"billing:"`) {
		t.Fatalf("Open with a user that may not read billing: = %v, want tracking.ErrACL naming \"billing:\"", err)
	}
	if strings.Contains(err.Error(), secPassword) {
		t.Errorf("error carries the password: %v", err)
	}
}

// rawClient talks to srv as the default user, like an attacker with write
// access to Redis.
func rawClient(t *testing.T, srv *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatalf("raw client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func rawGet(t *testing.T, c rueidis.Client, key string) []byte {
	t.Helper()
	b, err := c.Do(t.Context(), c.B().Get().Key(key).Build()).AsBytes()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return b
}

func rawSet(t *testing.T, c rueidis.Client, key string, v []byte) {
	t.Helper()
	if err := c.Do(t.Context(), c.B().Set().Key(key).Value(rueidis.BinaryString(v)).Build()).Error(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
}

// reencode decodes a signed envelope, lets change alter it, and encodes it
// again with a correct checksum: what an attacker who knows the format but
// not the secret can produce.
func reencode(t *testing.T, b []byte, change func(e *envelope.Entry)) []byte {
	t.Helper()
	e, err := envelope.Decode(b)
	if err != nil {
		t.Fatalf("decode a value the cache wrote: %v", err)
	}
	e.Payload = bytes.Clone(e.Payload)
	change(&e)
	return e.Append(nil)
}

// Values altered in Redis are never returned, by Get or GetOrLoad, and each
// refusal is counted as an integrity failure.
func TestSecureTamperedValuesRefused(t *testing.T) {
	srv := redistest.Start(t, nil)
	ro := rueidis.ClientOption{InitAddress: []string{srv.Addr()}}
	ring := secRing(1, 1)
	w := secOpen(t, ro, Memory|Redis, ring, nil)
	raw := rawClient(t, srv)
	ctx := t.Context()
	const secretValue = "the-real-value"
	if err := w.Set(ctx, "app:src", []byte(secretValue), time.Hour); err != nil {
		t.Fatal(err)
	}
	good := rawGet(t, raw, "app:src")
	attacker := secRing(1, 1)
	attacker.Secrets[1] = []byte("not-the-secret")

	tests := []struct {
		name  string
		value func() []byte
	}{
		{"flipped payload byte", func() []byte {
			b := bytes.Clone(good)
			b[len(b)-1] ^= 1
			return b
		}},
		{"flipped byte, checksum fixed", func() []byte {
			return reencode(t, good, func(e *envelope.Entry) { e.Payload[0] ^= 1 })
		}},
		{"flipped tag byte", func() []byte {
			return reencode(t, good, func(e *envelope.Entry) { e.Tag[3] ^= 0x80 })
		}},
		{"longer expiry", func() []byte {
			return reencode(t, good, func(e *envelope.Entry) { e.HardExpiry += int64(time.Hour) })
		}},
		{"wrong key id", func() []byte { return reencode(t, good, func(e *envelope.Entry) { e.KeyID = 7 }) }},
		{"copied from another key", func() []byte { return good }},
		{"unsigned", func() []byte {
			return reencode(t, good, func(e *envelope.Entry) { e.Flags &^= envelope.FlagSigned; e.KeyID, e.Tag = 0, [32]byte{} })
		}},
		{"signed with another secret", func() []byte {
			return reencode(t, good, func(e *envelope.Entry) {
				e.Payload = []byte("forged")
				if err := e.Sign("app:"+strings.ReplaceAll("signed with another secret", " ", "-"), attacker.envelopeRing()); err != nil {
					t.Fatal(err)
				}
			})
		}},
		{"not an envelope", func() []byte { return []byte("plain text a program wrote") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh reader for each value: nothing in its memory.
			r := secOpen(t, ro, Memory|Redis, ring, nil)
			key := "app:" + strings.ReplaceAll(tt.name, " ", "-")
			bad := tt.value()
			rawSet(t, raw, key, bad)

			before := secRoute(r, "app:").IntegrityFailures
			v, ok, err := r.Get(ctx, key)
			if ok || err != nil {
				t.Errorf("Get = %q, %v, %v; want a miss", v, ok, err)
			}
			if got := secRoute(r, "app:").IntegrityFailures - before; got < 1 {
				t.Errorf("integrity failures grew by %d after Get, want >= 1", got)
			}

			var loads atomic.Int64
			v, ok, err = r.GetOrLoad(ctx, key, LoaderFunc(func(context.Context, string) ([]byte, error) {
				loads.Add(1)
				return []byte("from-origin"), nil
			}))
			// The refused value must not block loading: the origin is asked
			// once and its value replaces the bad one.
			if err != nil || !ok || string(v) != "from-origin" || loads.Load() != 1 {
				t.Errorf("GetOrLoad = %q, %v, %v with %d loader calls; want from-origin, loaded once", v, ok, err, loads.Load())
			}
			r2 := secOpen(t, ro, Memory|Redis, ring, nil)
			if v, ok, err := r2.Get(ctx, key); err != nil || !ok || string(v) != "from-origin" {
				t.Errorf("another instance reads %q, %v, %v; want the reloaded value", v, ok, err)
			}

		})
	}
}

// Rotation: values signed with the old key keep verifying under a ring that
// holds old and new, new writes carry the new key id, and once the old key
// is retired only values rewritten since still verify.
func TestSecureKeyRotation(t *testing.T) {
	srv := redistest.Start(t, nil)
	ro := rueidis.ClientOption{InitAddress: []string{srv.Addr()}}
	raw := rawClient(t, srv)
	ctx := t.Context()
	keyID := func(key string) byte {
		e, err := envelope.Decode(rawGet(t, raw, key))
		if err != nil {
			t.Fatalf("decode %s: %v", key, err)
		}
		return e.KeyID
	}

	old := secOpen(t, ro, Memory|Redis, secRing(1, 1), nil)
	for _, k := range []string{"app:a", "app:b"} {
		if err := old.Set(ctx, k, []byte("old:"+k), time.Hour); err != nil {
			t.Fatal(err)
		}
		if id := keyID(k); id != 1 {
			t.Fatalf("%s written under key id %d, want 1", k, id)
		}
	}

	both := secOpen(t, ro, Memory|Redis, secRing(2, 1, 2), nil)
	for _, k := range []string{"app:a", "app:b"} {
		if v, ok := mustGet(t, both, k); !ok || string(v) != "old:"+k {
			t.Errorf("rotated ring reads %s = %q, %v; want the old key's value", k, v, ok)
		}
	}
	if err := both.Set(ctx, "app:a", []byte("new:app:a"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if id := keyID("app:a"); id != 2 {
		t.Errorf("rewrite under the rotated ring has key id %d, want 2", id)
	}
	if n := secRoute(both, "app:").IntegrityFailures; n != 0 {
		t.Errorf("integrity failures = %d during rotation, want 0", n)
	}

	retired := secOpen(t, ro, Memory|Redis, secRing(2, 2), nil)
	if v, ok := mustGet(t, retired, "app:a"); !ok || string(v) != "new:app:a" {
		t.Errorf("after retiring key 1, rewritten app:a = %q, %v; want new:app:a", v, ok)
	}
	if v, ok := mustGet(t, retired, "app:b"); ok {
		t.Errorf("after retiring key 1, app:b (never rewritten) = %q; want a miss", v)
	}
	if n := secRoute(retired, "app:").IntegrityFailures; n != 1 {
		t.Errorf("integrity failures = %d, want 1 (app:b under the retired key)", n)
	}
}

// MaxValueBytes holds on read: a value written by an instance with a larger
// limit is refused by one with a smaller limit.
func TestSecureMaxValueBytesOnRead(t *testing.T) {
	srv := redistest.Start(t, nil)
	ro := rueidis.ClientOption{InitAddress: []string{srv.Addr()}}
	big := openT(t, &Options{Redis: &ro, Logger: slog.New(slog.DiscardHandler),
		Routes: []Route{{Prefix: "app:", Tiers: Redis, MaxValueBytes: 1 << 20}}})
	small := openT(t, &Options{Redis: &ro, Logger: slog.New(slog.DiscardHandler),
		Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis, MaxValueBytes: 1 << 10}}})
	if err := big.Set(t.Context(), "app:big", bytes.Repeat([]byte("x"), 4<<10), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := small.Get(t.Context(), "app:big"); ok || !errors.Is(err, ErrValueTooLarge) {
		t.Errorf("Get of a 4 KiB value under a 1 KiB route = %d bytes, %v, %v; want ErrValueTooLarge", len(v), ok, err)
	}
}

// FuzzDecodeRemote feeds arbitrary bytes to the path every value read from
// Redis takes, on a signed route and on an unsigned one: no panic, nothing
// beyond the route's limit, and on the signed route only the exact bytes
// this cache signed for the key ever come back.
//
// The caches are bare structs, not Opened: an Open cache runs goroutines
// whose coverage the fuzzer would take for the input's, and it would spend
// its time minimising inputs that are not interesting. The clock and the
// random source are fixed, so every fuzzing worker process signs the same
// seeds.
func FuzzDecodeRemote(f *testing.F) {
	const key = "app:k"
	const limit = 1 << 12
	now := time.Unix(1_800_000_000, 0).UnixNano()
	open := func(sign *Keyring) (*Cache, *route) {
		o := (&Options{Signing: sign, Logger: slog.New(slog.DiscardHandler),
			Routes: []Route{{Prefix: "app:", Tiers: Memory, MaxValueBytes: limit}}}).withDefaults()
		if err := o.validate(); err != nil {
			f.Fatal(err)
		}
		c := &Cache{o: o, router: newRouter(o.Routes), ring: o.Signing.envelopeRing(), clk: clock.NewManual(time.Unix(0, now))}
		c.rnd.r = rand.New(rand.NewPCG(1, 2))
		return c, c.router.find(key)
	}
	signed, rs := open(secRing(1, 1))
	plain, rp := open(nil)

	valid := map[string]bool{}
	for _, v := range []string{"", "v", strings.Repeat("payload", 40)} {
		enc, _, _, err := signed.encode(rs, key, []byte(v), time.Hour, 0, false)
		if err != nil {
			f.Fatal(err)
		}
		valid[string(enc)] = true
		f.Add(enc)
		enc, _, _, err = plain.encode(rp, key, []byte(v), time.Hour, 0, false)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	neg, _, _, err := signed.encode(rs, key, nil, time.Hour, 0, true)
	if err != nil {
		f.Fatal(err)
	}
	valid[string(neg)] = true
	f.Add(neg)
	f.Add([]byte{})
	f.Add([]byte{envelope.Magic})

	f.Fuzz(func(t *testing.T, b []byte) {
		e, ok, err := signed.decodeRemote(rs, key, b, -1, 0)
		it := e.it
		if ok {
			if err != nil {
				t.Fatalf("signed: ok with error %v", err)
			}
			if !valid[string(b)] {
				t.Fatalf("signed route accepted bytes it never signed: %x", b)
			}
		}
		if len(it.Value) > limit {
			t.Fatalf("signed: %d-byte value past the %d limit", len(it.Value), limit)
		}
		e, ok, err = plain.decodeRemote(rp, key, b, -1, 0)
		it = e.it
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("plain: ok with error %v", err)
		}
		if len(it.Value) > limit {
			t.Fatalf("plain: %d-byte value past the %d limit", len(it.Value), limit)
		}
		env, derr := envelope.Decode(b)
		if derr != nil || !bytes.Equal(env.Payload, it.Value) || env.Version != it.Version {
			t.Fatalf("plain: accepted %x as %+v, but it decodes as %+v, %v", b, it, env, derr)
		}
	})
}
