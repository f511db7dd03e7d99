package bench

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/thermoscache/thermos/tiered"
)

// BenchmarkMemoryHit measures a read answered by the local cache, every key
// cached, from parallel goroutines: thermos's memory tier through
// GetOrLoad (with XFetch on, the default, and off) and through Get,
// against golang-lru and otter as the baseline in the same run.
func BenchmarkMemoryHit(b *testing.B) {
	const n = 4096
	keys := keyNames(n)
	ctx := context.Background()
	e := &env{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o := &origin{size: DefaultValueSize}
	for _, pol := range []string{PolicyLRU, PolicyOtter} {
		b.Run(pol, func(b *testing.B) {
			l, closeFn, err := newLocal(pol, 2*n)
			if err != nil {
				b.Fatal(err)
			}
			if closeFn != nil {
				defer closeFn()
			}
			tg := &readThrough{name: pol, l: l, b: o}
			benchHits(b, tg.Get, keys)
		})
	}
	for _, v := range []struct {
		name string
		beta float64
		get  bool
	}{{"thermos-getorload", 0, false}, {"thermos-getorload-xfetch-off", -1, false}, {"thermos-get", 0, true}} {
		b.Run(v.name, func(b *testing.B) {
			r := tiered.Route{Prefix: "bench:", Tiers: tiered.Memory, Beta: v.beta}
			tg, err := openThermos(ctx, e, thermosSpec{layout: Layout{Name: v.name, Tiers: tiered.Memory}, route: &r,
				entries: 2 * n, keyLen: len(keys[n-1]), valueSize: DefaultValueSize}, originLoader(o))
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			get := tg.Get
			if v.get {
				get = tg.c.Get
			}
			benchHits(b, get, keys)
		})
	}
}

// benchHits fills every key through get, then reads them in parallel.
func benchHits(b *testing.B, get func(context.Context, string) ([]byte, bool, error), keys []string) {
	ctx := context.Background()
	for _, k := range keys {
		if _, _, err := get(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, _, err := get(ctx, keys[i%len(keys)]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}
