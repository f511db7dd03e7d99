package herd

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// lockedBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A user refused the PUBLISH or SUBSCRIBE command itself (not only the
// channels) still gets one rebuild for two Groups, its value stored, with
// scripts and with transactions: inside a transaction the refused PUBLISH
// aborts the whole EXEC ("EXECABORT … NOPERM"), which used to fail the
// fenced write and leave the lease to expire, so a waiter loaded again.
// A refused SUBSCRIBE is warned about once, not on every wait.
func TestRefusedNotificationCommands(t *testing.T) {
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-pw"}})
	for _, cmd := range []string{"publish", "subscribe"} {
		for _, noScripts := range []bool{false, true} {
			name := cmd + "/scripts"
			if noScripts {
				name = cmd + "/transactions"
			}
			t.Run(name, func(t *testing.T) {
				user := "no" + cmd
				srv.SetUser(user, "reset", "on", ">pw", "~k:*", "~"+DefaultLockPrefix+"*", "&*", "+@all", "-@admin", "-"+cmd)
				key := "k:" + strings.ReplaceAll(name, "/", ":")
				var logs lockedBuffer
				gs := make([]*Group, 2)
				var reader rueidis.Client
				for i := range gs {
					c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()},
						Username: user, Password: "pw", DisableCache: true})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(c.Close)
					reader = c
					gs[i] = newGroup(t, &Options{Client: c, LeaseTTL: 5 * time.Second, WaitTimeout: 20 * time.Millisecond,
						DisableScripting: noScripts, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				}
				var origin counter
				release := make(chan struct{})
				load := origin.load("v", time.Minute, release)
				var wg sync.WaitGroup
				for _, g := range gs {
					for range 4 {
						wg.Go(func() {
							if r, err := g.Do(context.Background(), key, nil, load); err != nil || string(r.Value) != "v" {
								t.Errorf("Do = %q, %v", r.Value, err)
							}
						})
					}
				}
				waitFor(t, "the holder to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
				// Let the waiters poll a few times before the load ends.
				waitFor(t, "a waiter to poll", 10*time.Second, func() bool {
					return gs[0].Stats().LockWaits+gs[1].Stats().LockWaits > 0
				})
				close(release)
				wg.Wait()
				if got := origin.calls.Load(); got != 1 {
					t.Errorf("origin calls = %d, want 1", got)
				}
				if v, ok := redisGet(t, reader, key); !ok || v != "v" {
					t.Errorf("redis holds %q, %v; want v", v, ok)
				}
				if n := strings.Count(logs.String(), "cannot subscribe"); n > 0 {
					t.Errorf("%d \"cannot subscribe\" warnings; want the refusal recognised and told once", n)
				}
			})
		}
	}
}
