package tiered

import (
	"context"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestLoadedValueCachedLocally: a value GetOrLoad loaded through the shared
// herd stays in memory and on disk, so the next read is local. Redis 7.0
// delivers the invalidation of the herd's fenced write (a script) to the
// writer despite NOLOOP; a command on the same connection after the load is
// a barrier behind which that invalidation has certainly been applied, so
// the check below does not depend on timing.
func TestLoadedValueCachedLocally(t *testing.T) {
	s := redistest.Start(t, nil)
	c := openT(t, &Options{Redis: redisOpts(s), Dir: t.TempDir(), Logger: quietLog,
		Routes: []Route{{Prefix: "sw:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1}}})
	ctx := context.Background()
	l := &countingLoader{}
	for _, key := range []string{"sw:1", "sw:2", "sw:3"} {
		if _, _, err := c.GetOrLoad(ctx, key, l); err != nil {
			t.Fatal(err)
		}
		cl := c.mem.Client()
		if err := cl.Do(ctx, cl.B().Ping().Build()).Error(); err != nil {
			t.Fatal(err)
		}
		det := &Sources{}
		if _, ok, err := c.Get(WithSources(ctx, det), key); err != nil || !ok {
			t.Fatalf("Get(%s) after load: %v, %v", key, ok, err)
		}
		if src, _ := det.Source(key); src != SourceMemory {
			t.Errorf("read of %s after GetOrLoad answered by %v, want memory", key, src)
		}
	}
	if n := l.calls.Load(); n != 3 {
		t.Fatalf("loader calls = %d, want 3", n)
	}
}
