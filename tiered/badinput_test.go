package tiered

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestOpenRefusesBadOptions: every refused configuration returns an error
// wrapping ErrConfig, before anything is opened.
func TestOpenRefusesBadOptions(t *testing.T) {
	rd := &rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}} // never dialled: validation comes first
	ring := &Keyring{Current: 1, Secrets: map[uint8][]byte{1: []byte("0123456789abcdef0123456789abcdef")}}
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
	}{
		{"duplicate prefixes", Options{Routes: []Route{{Prefix: "a:", Tiers: Memory}, {Prefix: "a:", Tiers: Memory}}}},
		{"duplicate default routes", Options{Routes: []Route{{Tiers: Memory}, {Tiers: Memory}}}},
		{"disk route without Dir", Options{Routes: []Route{{Prefix: "d:", Tiers: Disk}}}},
		{"redis route without Redis", Options{Routes: []Route{{Prefix: "r:", Tiers: Memory | Redis}}}},
		{"route without tiers", Options{Routes: []Route{{Prefix: "x:"}}}},
		{"unknown tiers", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory | 0x40}}}},
		{"negative TTL", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, TTL: -time.Second}}}},
		{"negative MaxStale", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, MaxStale: -time.Second}}}},
		{"negative NegativeTTL", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, NegativeTTL: -time.Second}}}},
		{"negative jitter", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, Jitter: -0.1}}}},
		{"jitter of 1", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, Jitter: 1}}}},
		{"negative MaxValueBytes", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, MaxValueBytes: -1}}}},
		{"raw route with Signing", Options{Redis: rd, Signing: ring, Routes: []Route{{Prefix: "x:", Tiers: Redis, Raw: true}}}},
		{"raw route without redis", Options{Routes: []Route{{Prefix: "x:", Tiers: Memory, Raw: true}}}},
		{"prefix longer than MaxKeyBytes", Options{MaxKeyBytes: 4, Routes: []Route{{Prefix: "longer:", Tiers: Memory}}}},
		{"negative MemoryBytes", Options{MemoryBytes: -1}},
		{"negative DiskMaxBytes", Options{Dir: dir, DiskMaxBytes: -1}},
		{"negative MaxKeyBytes", Options{MaxKeyBytes: -1}},
		{"negative WriteBehind", Options{WriteBehind: -time.Millisecond}},
		{"negative LeaseTTL", Options{LeaseTTL: -time.Second}},
		{"negative LoadTimeout", Options{LoadTimeout: -time.Second}},
		{"unknown Unverified policy", Options{Unverified: ServeStale + 1}},
		{"Signing without its current secret", Options{Signing: &Keyring{Current: 2, Secrets: ring.Secrets}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open(context.Background(), &tt.opts)
			if c != nil {
				c.Close()
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("Open = %v, want an error wrapping ErrConfig", err)
			}
		})
	}
}

// TestBadCallsChangeNothing: every refused call returns its typed error and
// leaves what is stored as it was, on a memory-only route and on a route
// with every tier.
func TestBadCallsChangeNothing(t *testing.T) {
	s := redistest.Start(t, nil)
	for _, route := range []Route{
		{Prefix: "k", Tiers: Memory, MaxValueBytes: 64},
		{Prefix: "k", Tiers: Memory | Disk | Redis, MaxValueBytes: 64},
	} {
		t.Run(route.Tiers.String(), func(t *testing.T) {
			ctx := context.Background()
			c := openT(t, &Options{Redis: redisOpts(s), Dir: t.TempDir(), MaxKeyBytes: 32, Logger: quietLog,
				Routes: []Route{route}})
			const key = "k:stored"
			stored := []byte("the stored value")
			if err := c.Set(ctx, key, stored, 0); err != nil {
				t.Fatal(err)
			}
			big := bytes.Repeat([]byte{'x'}, 65)
			long := "k" + strings.Repeat("x", 32)
			bigLoader := LoaderFunc(func(context.Context, string) ([]byte, error) { return big, nil })
			tests := []struct {
				name string
				call func() error
				want error
			}{
				{"Get empty key", func() error { _, _, err := c.Get(ctx, ""); return err }, ErrEmptyKey},
				{"Set empty key", func() error { return c.Set(ctx, "", stored, 0) }, ErrEmptyKey},
				{"GetOrLoad empty key", func() error { _, _, err := c.GetOrLoad(ctx, "", &countingLoader{}); return err }, ErrEmptyKey},
				{"Delete empty key", func() error { return c.Delete(ctx, "") }, ErrEmptyKey},
				{"GetMany empty key", func() error { return c.GetMany(ctx, []string{""})[0].Err }, ErrEmptyKey},
				{"Get key too long", func() error { _, _, err := c.Get(ctx, long); return err }, ErrKeyTooLarge},
				{"Set key too long", func() error { return c.Set(ctx, long, stored, 0) }, ErrKeyTooLarge},
				{"Delete key too long", func() error { return c.Delete(ctx, long) }, ErrKeyTooLarge},
				{"Set value too large over a stored key", func() error { return c.Set(ctx, key, big, 0) }, ErrValueTooLarge},
				{"GetOrLoad value too large", func() error { _, _, err := c.GetOrLoad(ctx, "k:new", bigLoader); return err }, ErrValueTooLarge},
				{"Set negative ttl over a stored key", func() error { return c.Set(ctx, key, []byte("new"), -time.Second) }, ErrInvalidTTL},
				{"GetOrLoad nil loader", func() error { _, _, err := c.GetOrLoad(ctx, key, nil); return err }, ErrNoLoader},
				{"Typed Set value too large", func() error {
					return NewTyped[string](c, nil).Set(ctx, key, string(big), 0)
				}, ErrValueTooLarge},
			}
			for _, tt := range tests {
				if err := tt.call(); !errors.Is(err, tt.want) {
					t.Errorf("%s = %v, want %v", tt.name, err, tt.want)
				}
				if v, ok := mustGet(t, c, key); !ok || !bytes.Equal(v, stored) {
					t.Fatalf("after %s: Get(%s) = %q, %v; want %q", tt.name, key, v, ok, stored)
				}
			}
			if _, ok := mustGet(t, c, "k:new"); ok {
				t.Error("a refused load stored a value")
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			closed := []struct {
				name string
				call func() error
			}{
				{"Get", func() error { _, _, err := c.Get(ctx, key); return err }},
				{"Set", func() error { return c.Set(ctx, key, []byte("after close"), 0) }},
				{"GetOrLoad", func() error { _, _, err := c.GetOrLoad(ctx, key, &countingLoader{}); return err }},
				{"Delete", func() error { return c.Delete(ctx, key) }},
				{"GetMany", func() error { return c.GetMany(ctx, []string{key})[0].Err }},
				{"InvalidatePrefix", func() error { _, err := c.InvalidatePrefix(ctx, "k"); return err }},
				{"Flush", func() error { return c.Flush(ctx) }},
				{"Close again", func() error {
					if err := c.Close(); err != nil {
						return err
					}
					return ErrClosed
				}},
			}
			for _, tt := range closed {
				if err := tt.call(); !errors.Is(err, ErrClosed) {
					t.Errorf("%s after Close = %v, want ErrClosed", tt.name, err)
				}
			}
		})
	}
}

// TestCallsAfterCloseKeepDisk: calls refused after Close leave the disk as
// it was: a reopened cache still has the stored value.
func TestCallsAfterCloseKeepDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	o := &Options{Dir: dir, Routes: []Route{{Tiers: Memory | Disk}}}
	c := openT(t, o)
	if err := c.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete after Close = %v, want ErrClosed", err)
	}
	if err := c.Set(ctx, "k", []byte("w"), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Set after Close = %v, want ErrClosed", err)
	}
	c = openT(t, o)
	if v, ok := mustGet(t, c, "k"); !ok || string(v) != "v" {
		t.Fatalf("after reopen Get(k) = %q, %v; want v", v, ok)
	}
}
