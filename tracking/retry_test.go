package tracking

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestReadWithoutDeadlineEnds: with Redis gone, a read-only command under a
// context that never ends returns an error (after the bounded retries)
// instead of retrying forever, as rueidis's default would. What a
// tiered.Get with context.Background() rests on during an outage.
func TestReadWithoutDeadlineEnds(t *testing.T) {
	s := redistest.Start(t, nil)
	c, err := New(context.Background(), &Options{Redis: &rueidis.ClientOption{InitAddress: []string{s.Addr()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.Client()
	if err := cl.Do(context.Background(), cl.B().Get().Key("k").Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		t.Fatalf("GET while up: %v", err)
	}
	s.Stop()
	for _, multi := range []bool{false, true} {
		done := make(chan error, 1)
		go func() {
			if multi {
				rs := cl.DoMulti(context.Background(), cl.B().Get().Key("k").Build(), cl.B().Pttl().Key("k").Build())
				done <- rs[0].Error()
				return
			}
			done <- cl.Do(context.Background(), cl.B().Get().Key("k").Build()).Error()
		}()
		select {
		case err := <-done:
			if err == nil || rueidis.IsRedisNil(err) {
				t.Fatalf("GET (multi %v) with Redis stopped = %v; want a network error", multi, err)
			}
			var ne interface{ Timeout() bool }
			t.Logf("GET (multi %v) with Redis stopped: %v (net error: %v)", multi, err, errors.As(err, &ne))
		case <-time.After(60 * time.Second):
			t.Fatalf("GET (multi %v) with Redis stopped and no deadline still retrying after 60 s", multi)
		}
	}
}

// TestReadRefusedCredentialsNotRetried: once the server refuses the
// reconnection's credentials (the user's password changed, its connection
// killed), a read under a context that never ends fails after one refused
// AUTH, not after a retry loop hammering the server (the connections the
// server received say how many times it was asked).
func TestReadRefusedCredentialsNotRetried(t *testing.T) {
	s := redistest.Start(t, nil)
	s.SetUser("app", "on", ">pw1", "~*", "&*", "+@all")
	c, err := New(context.Background(), &Options{Redis: &rueidis.ClientOption{InitAddress: []string{s.Addr()}, Username: "app", Password: "pw1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.Client()
	if err := cl.Do(context.Background(), cl.B().Get().Key("k").Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
		t.Fatalf("GET while allowed: %v", err)
	}
	s.SetUser("app", "resetpass", ">pw2")
	before := s.Info("stats", "total_connections_received")
	if _, err := s.Do("CLIENT", "KILL", "USER", "app"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cl.Do(context.Background(), cl.B().Get().Key("k").Build()).Error() }()
	select {
	case err := <-done:
		if err == nil || rueidis.IsRedisNil(err) {
			t.Fatalf("GET with refused credentials = %v; want an error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("GET with refused credentials and no deadline still retrying after 60 s")
	}
	after := s.Info("stats", "total_connections_received")
	var b, a int
	if _, err := fmt.Sscan(before, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(after, &a); err != nil {
		t.Fatal(err)
	}
	// rueidis's own reconnect and the re-arm loop dial too (3 or 4
	// connections seen); a read retrying refused credentials dials
	// maxRetries times more.
	if a-b >= maxRetries/2 {
		t.Fatalf("%d connections for one GET with refused credentials: the read retried them", a-b)
	}
}
