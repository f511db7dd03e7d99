package tracking

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// A cache started while Redis is down opens, refuses Redis calls with
// ErrUnavailable, connects once Redis is back, and tells listeners with an
// epoch bump so they revalidate.
func TestConnectInBackground(t *testing.T) {
	s := redistest.Start(t, nil)
	s.Stop()
	ctx := context.Background()
	opts := &Options{Redis: &rueidis.ClientOption{InitAddress: []string{s.Addr()}}, KeepUnverified: true}

	if _, err := New(ctx, opts); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New without ConnectInBackground = %v, want ErrUnavailable", err)
	}

	opts.ConnectInBackground = true
	c, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New with ConnectInBackground: %v", err)
	}
	defer c.Close()
	var bumps atomic.Int64
	c.OnInvalidate(func(_ []string, bump bool) {
		if bump {
			bumps.Add(1)
		}
	})
	if c.Client() != nil {
		t.Fatal("Client() != nil before Redis is up")
	}
	if _, _, err := c.Fetch(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Fetch while down = %v, want ErrUnavailable", err)
	}
	// An entry cached meanwhile (say, warmed from disk) is unverified after
	// the connection comes up.
	tk := c.Reserve("k")
	if !c.Fill(tk, "k", Item{Value: []byte("old")}, true) {
		t.Fatal("Fill refused while offline")
	}
	epoch := c.Epoch()

	s.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for c.Client() == nil || bumps.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("cache did not connect within 10s of Redis coming back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c.Epoch() <= epoch {
		t.Fatalf("epoch %d after connecting, want > %d", c.Epoch(), epoch)
	}
	if _, fresh, ok := c.Get("k"); !ok || fresh {
		t.Fatalf("Get after connect: ok=%v fresh=%v; want an unverified entry", ok, fresh)
	}
	if _, err := s.Do("SET", "k", "new"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invalidation of k", 10*time.Second, func() bool { _, _, ok := c.Get("k"); return !ok })
	it, ok, err := c.Fetch(ctx, "k")
	if err != nil || !ok || string(it.Value) != "new" {
		t.Fatalf("Fetch after connect = %q, %v, %v; want new", it.Value, ok, err)
	}
}

// Close while the background connection is still failing returns promptly
// and leaves no goroutine behind.
func TestConnectInBackgroundClose(t *testing.T) {
	s := redistest.Start(t, nil)
	s.Stop()
	c, err := New(context.Background(), &Options{
		Redis:               &rueidis.ClientOption{InitAddress: []string{s.Addr()}},
		ConnectInBackground: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung while connecting in the background")
	}
}
