package tiered

import (
	"context"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

func TestZZClusterPrimaryDownAtOpen(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	dead := cl.SlotOwner(0)
	dead.Kill()
	start := time.Now()
	c, err := Open(context.Background(), &Options{Redis: clusterOpts(cl), Logger: quietLog,
		Routes: []Route{{Prefix: "k:", Tiers: Memory | Redis, TTL: time.Hour}}})
	t.Logf("Open: %v after %v", err, time.Since(start))
	if err == nil {
		defer c.Close()
		for i := range 5 {
			k := "k:" + string(rune('a'+i))
			err := c.Set(context.Background(), k, []byte("v"), 0)
			_, ok, gerr := c.Get(context.Background(), k)
			t.Logf("%s: Set %v, Get %v %v", k, err, ok, gerr)
		}
	}
}
