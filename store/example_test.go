package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/thermoscache/thermos/store"
)

// manualClock is a store.Clock that moves only when told to.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func Example() {
	ctx := context.Background()
	clk := &manualClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, err := store.Open("/cache", &store.Options{
		FS:     vfs.NewMem(), // in memory for the example; nil means the real disk
		Clock:  clk,          // nil means the wall clock
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	// Values are opaque bytes; each has an expiry (or none).
	_ = db.Set(ctx, "user:1", []byte("ada"), time.Minute)
	b := db.NewBatch()
	_ = b.Set("user:2", []byte("grace"), 0)
	_ = b.Delete("user:3")
	_ = b.Commit(ctx) // atomic, and one fsync for all of it

	e, ok, _ := db.Get(ctx, "user:1")
	fmt.Printf("user:1 = %s (%v), expires %s\n", e.Value, ok, e.Expiry.Format(time.TimeOnly))

	_ = db.Scan(ctx, "user:", func(key string, e store.Entry) error {
		fmt.Printf("scan %s = %s\n", key, e.Value)
		return nil
	})

	clk.Advance(time.Minute)
	_, ok, _ = db.Get(ctx, "user:1")
	fmt.Println("user:1 after its TTL:", ok)

	// A disk fault (say, the disk filled up) puts the store in its error
	// state; once the cause is gone, Recover reopens it in place.
	if err := db.Err(); err == nil {
		fmt.Println("healthy:", db.Recover(ctx) == nil)
	}
	// Output:
	// user:1 = ada (true), expires 00:01:00
	// scan user:1 = ada
	// scan user:2 = grace
	// user:1 after its TTL: false
	// healthy: true
}
