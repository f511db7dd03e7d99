package herd

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/thermoscache/thermos/internal/redistest"
)

func TestMain(m *testing.M) {
	// A re-executed test binary acting as another process of the fleet.
	if mode := os.Getenv(helperModeEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	goleak.VerifyTestMain(m)
}

// newClient connects to addr without client-side caching; the client is
// closed in t.Cleanup (after any Group made later, cleanups run LIFO).
func newClient(t testing.TB, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatalf("rueidis.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

func newGroup(t testing.TB, opts *Options) *Group {
	t.Helper()
	g, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// startRedis starts a private redis-server and returns it with a client.
func startRedis(t testing.TB, args ...string) (*redistest.Server, rueidis.Client) {
	t.Helper()
	srv := redistest.Start(t, &redistest.Options{Args: args})
	return srv, newClient(t, srv.Addr())
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// counter is an origin that counts its calls.
type counter struct {
	calls atomic.Int64
}

// load returns a LoadFunc that counts, waits for release (if not nil) or ctx,
// and returns value with ttl.
func (c *counter) load(value string, ttl time.Duration, release <-chan struct{}) LoadFunc {
	return func(ctx context.Context) ([]byte, time.Duration, error) {
		c.calls.Add(1)
		if release != nil {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		}
		return []byte(value), ttl, nil
	}
}

func redisGet(t testing.TB, c rueidis.Client, key string) (string, bool) {
	t.Helper()
	v, err := c.Do(context.Background(), c.B().Get().Key(key).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", false
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v, true
}
