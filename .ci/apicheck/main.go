// Command apicheck is a program outside the thermos module, built as a
// user's program would be (its own go.mod, a replace to the repository, no
// go.work): it imports tiered and store and calls every exported function
// and method of both once. Building it proves that every exported
// signature can be named and used from outside the module (none needs an
// internal/ type); exportcheck -uses proves that none was left out. Run, it
// exercises them offline: a memory and disk cache, and a store, in a
// temporary directory.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tiered"
)

type profile struct {
	Name string `json:"name" cbor:"name"`
}

// wall is a caller's own clock.
type wall struct{}

func (wall) Now() time.Time { return time.Now() }

var (
	_ tiered.Clock                = wall{}
	_ store.Clock                 = wall{}
	_ tiered.Loader               = tiered.LoaderFunc(nil)
	_ tiered.TypedLoader[profile] = tiered.TypedLoaderFunc[profile](nil)
	_ tiered.Codec[profile]       = tiered.JSON[profile]{}
	_ tiered.Codec[profile]       = (*tiered.CBOR[profile])(nil)
	_ slog.LogValuer              = tiered.Keyring{}
	_ fmt.Stringer                = tiered.Keyring{}
	_ fmt.GoStringer              = tiered.Keyring{}
	_ fmt.Stringer                = tiered.Memory | tiered.Disk
	_ fmt.Stringer                = tiered.SourceMemory
	_ fmt.Stringer                = store.NoSync
)

func main() {
	dir, err := os.MkdirTemp("", "apicheck")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(context.Background(), dir); err != nil {
		log.Fatal(err)
	}
	fmt.Println("apicheck: ok")
}

func check(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func run(ctx context.Context, dir string) error {
	if err := runTiered(ctx, filepath.Join(dir, "tiered")); err != nil {
		return err
	}
	return runStore(ctx, filepath.Join(dir, "store"))
}

func runTiered(ctx context.Context, dir string) error {
	ring := &tiered.Keyring{Current: 1, Secrets: map[byte][]byte{1: []byte("apicheck-secret-0123456789abcdef")}}
	_, _, _ = ring.String(), ring.GoString(), ring.LogValue()
	c, err := tiered.Open(ctx, &tiered.Options{
		Routes: []tiered.Route{
			{Prefix: "user:", Tiers: tiered.Memory, TTL: time.Minute},
			{Prefix: "blob:", Tiers: tiered.Memory | tiered.Disk},
		},
		RequireRoute: true,
		Dir:          dir,
		Signing:      ring,
		Unverified:   tiered.Revalidate,
		Clock:        wall{},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return check("tiered.Open", err)
	}
	defer c.Close()

	var sources tiered.Sources
	rctx := tiered.WithSources(tiered.WithBypass(ctx, 0), &sources)
	if err := c.Set(rctx, "user:1", []byte("ada"), 0); err != nil {
		return check("Set", err)
	}
	if v, ok, err := c.Get(rctx, "user:1"); err != nil || !ok || string(v) != "ada" {
		return fmt.Errorf("get = %q, %v, %v", v, ok, err)
	}
	if _, _, err := c.Get(rctx, "usr:1"); !errors.Is(err, tiered.ErrNoRoute) {
		return fmt.Errorf("get of an unrouted key = %v, want ErrNoRoute", err)
	}
	load := tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) { return []byte("loaded"), nil })
	if _, err := load.Load(ctx, "user:x"); err != nil {
		return check("LoaderFunc.Load", err)
	}
	if _, _, err := c.GetOrLoad(rctx, "blob:1", load); err != nil {
		return check("GetOrLoad", err)
	}
	for _, r := range c.GetMany(rctx, []string{"user:1", "blob:1"}) {
		if r.Err != nil || !r.OK {
			return fmt.Errorf("getMany = %+v", r)
		}
	}
	src, _ := sources.Source("user:1")
	_ = src.String()
	_ = sources.All()
	if err := c.Delete(ctx, "user:1"); err != nil {
		return check("Delete", err)
	}
	if _, err := c.InvalidatePrefix(ctx, "blob:"); err != nil {
		return check("InvalidatePrefix", err)
	}
	if err := c.Flush(ctx); err != nil {
		return check("Flush", err)
	}
	_ = c.StalenessBound()
	if err := c.Err(); err != nil {
		return check("Err", err)
	}
	// What Open returns when the Redis user lacks a right.
	re := &tiered.RightsError{}
	_, _ = re.Error(), re.Is(tiered.ErrRefused)
	st := c.Stats()
	for _, r := range st.Routes {
		_, _, _ = r.Hits(), r.HitRatio(), r.Tiers.String()
		_, _ = r.LoadLatency.Quantile(0.99), r.LoadLatency.Mean()
	}

	cb, err := tiered.NewCBOR[profile]()
	if err != nil {
		return check("NewCBOR", err)
	}
	b, err := cb.Marshal(profile{Name: "ada"})
	if err != nil {
		return check("CBOR.Marshal", err)
	}
	var p profile
	if err := cb.Unmarshal(b, &p); err != nil {
		return check("CBOR.Unmarshal", err)
	}
	js := tiered.JSON[profile]{}
	if b, err = js.Marshal(p); err != nil {
		return check("JSON.Marshal", err)
	}
	if err := js.Unmarshal(b, &p); err != nil {
		return check("JSON.Unmarshal", err)
	}
	ty := tiered.NewTyped[profile](c, &tiered.TypedOptions[profile]{Codec: cb})
	if err := ty.Set(ctx, "user:2", p, time.Minute); err != nil {
		return check("Typed.Set", err)
	}
	if _, _, err := ty.Get(ctx, "user:2"); err != nil {
		return check("Typed.Get", err)
	}
	tload := tiered.TypedLoaderFunc[profile](func(context.Context, string) (profile, error) { return profile{Name: "grace"}, nil })
	if _, err := tload.Load(ctx, "user:3"); err != nil {
		return check("TypedLoaderFunc.Load", err)
	}
	if _, _, err := ty.GetOrLoad(ctx, "user:3", tload); err != nil {
		return check("Typed.GetOrLoad", err)
	}
	if err := ty.Delete(ctx, "user:2"); err != nil {
		return check("Typed.Delete", err)
	}
	return check("Close", c.Close())
}

func runStore(ctx context.Context, dir string) error {
	db, err := store.Open(dir, &store.Options{Durability: store.NoSync, Clock: wall{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return check("store.Open", err)
	}
	if err := db.Set(ctx, "a", []byte("1"), time.Minute); err != nil {
		return check("DB.Set", err)
	}
	if err := db.SetExpiry(ctx, "b", []byte("2"), time.Now().Add(time.Minute)); err != nil {
		return check("DB.SetExpiry", err)
	}
	if _, ok, err := db.Get(ctx, "a"); err != nil || !ok {
		return fmt.Errorf("store get = %v, %v", ok, err)
	}
	b := db.NewBatch()
	if err := b.Set("c", []byte("3"), 0); err != nil {
		return check("Batch.Set", err)
	}
	if err := b.SetExpiry("d", []byte("4"), time.Now().Add(time.Minute)); err != nil {
		return check("Batch.SetExpiry", err)
	}
	if err := b.Delete("a"); err != nil {
		return check("Batch.Delete", err)
	}
	_ = b.Len()
	if err := b.Commit(ctx); err != nil {
		return check("Batch.Commit", err)
	}
	b.Close()
	b = db.NewBatch()
	if err := b.CommitSync(ctx); err != nil {
		return check("Batch.CommitSync", err)
	}
	n := 0
	if err := db.Scan(ctx, "", func(key string, e store.Entry) error { n++; _ = e.Expiry; return nil }); err != nil {
		return check("DB.Scan", err)
	}
	nv := 0
	if err := db.ScanView(ctx, "", func(key []byte, e store.Entry) error { nv++; _ = len(key) + len(e.Value); return nil }); err != nil || nv != n {
		return check("DB.ScanView", fmt.Errorf("%d entries (Scan: %d): %v", nv, n, err))
	}
	if _, err := db.EstimateEntries(); err != nil {
		return check("DB.EstimateEntries", err)
	}
	if err := db.Delete(ctx, "b"); err != nil {
		return check("DB.Delete", err)
	}
	if err := db.Sweep(ctx); err != nil {
		return check("DB.Sweep", err)
	}
	if err := db.Sync(ctx); err != nil {
		return check("DB.Sync", err)
	}
	if err := db.Recover(ctx); err != nil {
		return check("DB.Recover", err)
	}
	if err := db.Err(); err != nil {
		return check("DB.Err", err)
	}
	_ = db.Stats().Durability.String()
	if err := db.Close(); err != nil {
		return check("DB.Close", err)
	}
	if err := store.Wipe(dir); err != nil {
		return check("store.Wipe", err)
	}
	return check("store.WipeFS", store.WipeFS(vfs.NewMem(), "mem"))
}
