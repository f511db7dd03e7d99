package tracking

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestCloseStopsGoroutines: Close stops the coarse clock, the re-arm loop and
// rueidis's goroutines, also after a reconnect.
func TestCloseStopsGoroutines(t *testing.T) {
	srv := redistest.Start(t, nil)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	local, err := New(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(t.Context(), &Options{Redis: redisOpts(srv)})
	if err != nil {
		t.Fatal(err)
	}
	srv.CLI("CLIENT", "KILL", "TYPE", "normal") // force a reconnect through the re-arm loop
	waitFor(t, "the epoch bump", 5*time.Second, func() bool { return c.Stats().EpochBumps > 0 })
	local.Close()
	c.Close()
	c.Close()
}
