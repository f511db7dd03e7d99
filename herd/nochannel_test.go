package herd

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// An ACL user allowed the keys but not the notification channels (Redis 7
// gives new users no channels) still gets exactly one rebuild whose value is
// stored: the write and the release skip PUBLISH once it is refused, and
// waiters in the other Group wake at their WaitTimeout instead.
func TestNoChannelPermission(t *testing.T) {
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-pw"}})
	srv.SetUser("nochan", "on", ">pw", "~k:*", "~"+DefaultLockPrefix+"*", "resetchannels", "+@all", "-@admin")
	for _, noScripts := range []bool{false, true} {
		name := "scripts"
		if noScripts {
			name = "transactions"
		}
		t.Run(name, func(t *testing.T) {
			key := "k:" + name
			gs := make([]*Group, 2)
			var reader rueidis.Client
			for i := range gs {
				c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()},
					Username: "nochan", Password: "pw", DisableCache: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(c.Close)
				reader = c
				gs[i] = newGroup(t, &Options{Client: c, LeaseTTL: 5 * time.Second, WaitTimeout: 50 * time.Millisecond,
					DisableScripting: noScripts, Logger: slog.New(slog.DiscardHandler)})
			}
			var origin counter
			release := make(chan struct{})
			load := origin.load("v", time.Minute, release)
			var wg sync.WaitGroup
			results := make(chan Result, 8)
			for _, g := range gs {
				for range 4 {
					wg.Go(func() {
						r, err := g.Do(context.Background(), key, nil, load)
						if err != nil {
							t.Errorf("Do: %v", err)
						}
						results <- r
					})
				}
			}
			waitFor(t, "the holder to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
			close(release)
			wg.Wait()
			close(results)
			stored := 0
			for r := range results {
				if string(r.Value) != "v" {
					t.Errorf("Do returned %q, want v", r.Value)
				}
				if r.Stored {
					stored++
				}
			}
			if got := origin.calls.Load(); got != 1 {
				t.Errorf("origin calls = %d, want 1", got)
			}
			if stored == 0 {
				t.Error("no caller saw its value stored: the fenced write failed")
			}
			if v, ok := redisGet(t, reader, key); !ok || v != "v" {
				t.Errorf("redis holds %q, %v; want v", v, ok)
			}
		})
	}
}
