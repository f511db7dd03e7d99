package tiered

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestDiskHitAllocations: a hit on a Disk-only route allocates no more
// than the store's Get it makes (the value's copy): no ticket, no copy of
// the entry for fills there are none of. The bound leaves half an
// allocation for the race detector dropping pooled items at random in
// either measurement.
func TestDiskHitAllocations(t *testing.T) {
	ctx := context.Background()
	c := openT(t, &Options{Dir: filepath.Join(t.TempDir(), "disk"), Logger: quietLog, RequireRoute: true,
		Routes: []Route{{Prefix: "d:", Tiers: Disk, TTL: time.Hour}}})
	keys := make([]string, 202) // AllocsPerRun calls once more to warm up
	for i := range keys {
		keys[i] = "d:" + strconv.Itoa(i)
		if err := c.Set(ctx, keys[i], []byte("value "+keys[i]), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	db := c.disk.wb.db.Load()
	i := 0
	tiered := testing.AllocsPerRun(200, func() {
		i = (i + 1) % len(keys)
		if v, ok, err := c.Get(ctx, keys[i]); err != nil || !ok || string(v) != "value "+keys[i] {
			t.Fatalf("Get(%s) = %q, %v, %v", keys[i], v, ok, err)
		}
	})
	stored := testing.AllocsPerRun(200, func() {
		i = (i + 1) % len(keys)
		if _, ok, err := db.Get(ctx, keys[i]); err != nil || !ok {
			t.Fatalf("store Get(%s) = %v, %v", keys[i], ok, err)
		}
	})
	t.Logf("disk hit: %.2f allocations, store Get %.2f", tiered, stored)
	if tiered > stored+0.5 {
		t.Errorf("a Disk-only hit made %.2f allocations, its store Get %.2f: the tier adds some", tiered, stored)
	}
}
