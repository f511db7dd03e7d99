package herd

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

const authPassword = "herd-auth-secret"

// authSetup is a protected server and the client options that reach it.
type authSetup struct {
	name string
	opts rueidis.ClientOption
}

// authSetups starts a server with requirepass, one where the Group logs in
// as an ACL user allowed only its data keys, the lock keys and the
// notification channels, and a TLS server with that ACL user.
func authSetups(t *testing.T) []authSetup {
	t.Helper()
	user := []string{"on", ">" + authPassword, "~k:*", "~" + DefaultLockPrefix + "*", "&" + DefaultChannelPrefix + "*", "+@all", "-@admin"}

	pass := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", authPassword}})
	acl := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + authPassword}})
	acl.SetUser("herd", user...)
	tl := redistest.StartTLS(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + authPassword}})
	tl.SetUser("herd", user...)

	return []authSetup{
		{"requirepass", rueidis.ClientOption{InitAddress: []string{pass.Addr()}, Password: authPassword}},
		{"acl-user", rueidis.ClientOption{InitAddress: []string{acl.Addr()}, Username: "herd", Password: authPassword}},
		{"tls+acl-user", rueidis.ClientOption{InitAddress: []string{tl.TLSAddr()}, Username: "herd", Password: authPassword,
			TLSConfig: tl.ClientConfig()}},
	}
}

// The shared lease, the fenced write and the pub/sub wake-up work through a
// password, a restricted ACL user and TLS: two Groups (two clients, as two
// processes) x 8 goroutines call the origin once, and the waiting Group is
// woken by the notification, not by its (long) WaitTimeout.
func TestAuthStampede(t *testing.T) {
	for _, s := range authSetups(t) {
		for _, noScripts := range []bool{false, true} {
			name := s.name + "/scripts"
			if noScripts {
				name = s.name + "/transactions"
			}
			t.Run(name, func(t *testing.T) {
				key := "k:" + name // the setups' servers are shared by both subtests
				opts := s.opts
				opts.DisableCache = true
				const groups, per = 2, 8
				gs := make([]*Group, groups)
				var reader rueidis.Client
				for i := range gs {
					c, err := rueidis.NewClient(opts)
					if err != nil {
						t.Fatalf("client: %v", err)
					}
					t.Cleanup(c.Close)
					reader = c
					gs[i] = newGroup(t, &Options{Client: c, LeaseTTL: 5 * time.Second, WaitTimeout: time.Minute,
						DisableScripting: noScripts, Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
				}
				// The waiting Group must be asleep, subscribed, before the
				// holder finishes, or it finds the value on its second look.
				var asleep atomic.Int64
				for _, g := range gs {
					g.beforeWait = func(string) { asleep.Add(1) }
				}
				var origin counter
				release := make(chan struct{})
				load := origin.load("hot", time.Minute, release)
				var wg sync.WaitGroup
				errs := make(chan error, groups*per)
				for _, g := range gs {
					for range per {
						wg.Go(func() {
							r, err := g.Do(context.Background(), key, nil, load)
							if err == nil && string(r.Value) != "hot" {
								err = errors.New("got " + string(r.Value))
							}
							errs <- err
						})
					}
				}
				waitFor(t, "the other group to sleep on the lease", 10*time.Second, func() bool { return asleep.Load() > 0 })
				start := time.Now()
				close(release)
				wg.Wait()
				took := time.Since(start)
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("Do: %v", err)
					}
				}
				if got := origin.calls.Load(); got != 1 {
					t.Errorf("origin calls = %d, want 1", got)
				}
				if v, ok := redisGet(t, reader, key); !ok || v != "hot" {
					t.Errorf("redis value = %q, %v; want hot", v, ok)
				}
				var wakeups uint64
				for _, g := range gs {
					wakeups += g.Stats().Wakeups
				}
				if wakeups == 0 || took > 10*time.Second {
					t.Errorf("waiters took %v with %d wake-ups: the notification did not arrive", took, wakeups)
				}
			})
		}
	}
}

type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
