package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/store"
)

func Example() {
	ctx := context.Background()
	clk := clock.NewManual(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	db, err := store.Open("/cache", &store.Options{
		FS:     vfs.NewMem(), // in memory for the example; nil means the real disk
		Clock:  clk,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	_ = db.Set(ctx, "user:1", []byte("ada"), time.Minute)
	b := db.NewBatch()
	_ = b.Set("user:2", []byte("grace"), 0)
	_ = b.Set("flag:dark", []byte("on"), 0)
	_ = b.Commit(ctx) // one fsync for both

	e, ok, _ := db.Get(ctx, "user:1")
	fmt.Printf("user:1 = %s (%v)\n", e.Payload, ok)

	_ = db.Scan(ctx, "user:", func(key string, e envelope.Entry) error {
		fmt.Printf("scan %s = %s\n", key, e.Payload)
		return nil
	})

	clk.Advance(time.Minute)
	_, ok, _ = db.Get(ctx, "user:1")
	fmt.Println("user:1 after its TTL:", ok)
	// Output:
	// user:1 = ada (true)
	// scan user:1 = ada
	// scan user:2 = grace
	// user:1 after its TTL: false
}
