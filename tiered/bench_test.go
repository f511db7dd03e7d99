package tiered

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// Each benchmark compares a tiered read with the layer under it, in the
// same run: the difference is routing, the envelope and the counters.
// Values are 100 bytes; 1,000 keys are read round-robin.

const benchKeys = 1000

func benchKey(i int) string { return fmt.Sprintf("bench:%04d", i%benchKeys) }

var benchValue = make([]byte, 100)

// BenchmarkMemoryHit: a memory hit through tiered vs tracking.Cache.Get.
func BenchmarkMemoryHit(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Routes: []Route{{Prefix: "bench:", Tiers: Memory, TTL: time.Hour}}})
	tc, err := tracking.New(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tc.Close() })
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), benchValue, 0); err != nil {
			b.Fatal(err)
		}
		if err := tc.SetLocal(benchKey(i), tracking.Item{Value: benchValue}); err != nil {
			b.Fatal(err)
		}
	}
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, _ := c.Get(ctx, keys[i%benchKeys]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("tracking", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, ok := tc.Get(keys[i%benchKeys]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("tiered-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var worker atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			// Each goroutine starts at its own key (see tracking's benchmark).
			i := int(worker.Add(1)) * (benchKeys / 8)
			for pb.Next() {
				c.Get(ctx, keys[i%benchKeys])
				i++
			}
		})
	})
	b.Run("tracking-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var worker atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)) * (benchKeys / 8)
			for pb.Next() {
				tc.Get(keys[i%benchKeys])
				i++
			}
		})
	})
}

// BenchmarkDiskHit: a disk hit through tiered (disk-only route) vs
// store.DB.Get on a store of the same size.
func BenchmarkDiskHit(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Dir: b.TempDir(), Routes: []Route{{Prefix: "bench:", Tiers: Disk, TTL: time.Hour}}})
	db, err := store.Open(b.TempDir(), &store.Options{Durability: store.NoSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), benchValue, 0); err != nil {
			b.Fatal(err)
		}
		e := envelope.Entry{Header: envelope.Header{Version: uint64(i)}, Payload: benchValue}
		if err := db.Set(ctx, benchKey(i), e.Append(nil), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := c.Get(ctx, benchKey(i)); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
	b.Run("store", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := db.Get(ctx, benchKey(i)); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
}

// BenchmarkRedisHit: a Redis hit through tiered (Redis-only route) vs a
// plain rueidis GET of the same keys.
func BenchmarkRedisHit(b *testing.B) {
	ctx := context.Background()
	s := redistest.Start(b, nil)
	c := openT(b, &Options{Redis: redisOpts(s), Routes: []Route{{Prefix: "bench:", Tiers: Redis, TTL: time.Hour}}})
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), benchValue, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := c.Get(ctx, benchKey(i)); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
	b.Run("rueidis", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := rc.Do(ctx, rc.B().Get().Key(benchKey(i)).Build()).AsBytes(); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

type benchProfile struct {
	Name  string `json:"name"`
	Age   int    `json:"age"`
	Admin bool   `json:"admin"`
}

// BenchmarkTypedGetOrLoadHit: a typed (JSON) GetOrLoad memory hit vs the
// untyped GetOrLoad hit of the same bytes: the cost of decoding.
func BenchmarkTypedGetOrLoadHit(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Routes: []Route{{Prefix: "bench:", Tiers: Memory, TTL: time.Hour, Beta: -1}}})
	ty := NewTyped[benchProfile](c, nil)
	load := TypedLoaderFunc[benchProfile](func(context.Context, string) (benchProfile, error) { return benchProfile{Name: "ada", Age: 36}, nil })
	for i := range benchKeys {
		if _, _, err := ty.GetOrLoad(ctx, benchKey(i), load); err != nil {
			b.Fatal(err)
		}
	}
	raw := LoaderFunc(func(context.Context, string) ([]byte, error) { return nil, ErrNotFound })
	b.Run("typed", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := ty.GetOrLoad(ctx, benchKey(i), load); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
	b.Run("bytes", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := c.GetOrLoad(ctx, benchKey(i), raw); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
}
