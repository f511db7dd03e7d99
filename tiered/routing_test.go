package tiered

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestRoutingTouchesOnlyItsTiers checks, from Redis's own counters (INFO
// commandstats, DBSIZE) and the disk tier's read and write counts, that a
// memory-only route never reaches Redis or Pebble and a Redis-only route
// never reaches Pebble, in a cache that has all three tiers.
func TestRoutingTouchesOnlyItsTiers(t *testing.T) {
	s := redistest.Start(t, nil)
	adm := newAdmin(t, s)
	ctx := context.Background()
	c := openT(t, &Options{
		Redis: redisOpts(s), Dir: t.TempDir(), Logger: quietLog,
		Routes: []Route{
			{Prefix: "mem:", Tiers: Memory},
			{Prefix: "red:", Tiers: Redis},
			{Prefix: "dsk:", Tiers: Memory | Disk | Redis},
		},
	})
	waitFor(t, 10*time.Second, func() bool { return c.Stats().RevalidationPasses > 0 }, "the start-up revalidation pass")

	// workload runs every kind of call on n keys under prefix.
	workload := func(prefix string) {
		t.Helper()
		l := &countingLoader{}
		for i := range 50 {
			k := fmt.Sprintf("%s%d", prefix, i)
			if err := c.Set(ctx, k, []byte("v"), 0); err != nil {
				t.Fatalf("Set(%s): %v", k, err)
			}
			if _, ok := mustGet(t, c, k); !ok {
				t.Fatalf("Get(%s) missed after Set", k)
			}
			if _, _, err := c.GetOrLoad(ctx, k+":loaded", l); err != nil {
				t.Fatalf("GetOrLoad(%s): %v", k, err)
			}
			mustGet(t, c, k+":absent")
			if i%5 == 0 {
				if err := c.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%s): %v", k, err)
				}
			}
		}
		c.GetMany(ctx, []string{prefix + "1", prefix + "2", prefix + "absent"})
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	type snapshot struct {
		cmds                  map[string]int64
		keys                  int64
		diskReads, diskWrites int64
		memEntries            int
	}
	snap := func() snapshot {
		st := c.Stats()
		return snapshot{adm.cmdstats(), adm.dbsize(), st.DiskReads, st.DiskWrites, st.MemoryEntries}
	}

	before := snap()
	workload("mem:")
	after := snap()
	if d := diffStats(before.cmds, after.cmds); len(d) > 0 {
		t.Errorf("memory-only route sent commands to redis: %v", d)
	}
	if after.keys != before.keys {
		t.Errorf("memory-only route changed DBSIZE: %d → %d", before.keys, after.keys)
	}
	if after.diskReads != before.diskReads || after.diskWrites != before.diskWrites {
		t.Errorf("memory-only route used the disk: reads %d → %d, writes %d → %d", before.diskReads, after.diskReads, before.diskWrites, after.diskWrites)
	}
	if after.memEntries <= before.memEntries {
		t.Errorf("memory-only route stored nothing in memory: %d → %d entries", before.memEntries, after.memEntries)
	}

	before = after
	workload("red:")
	after = snap()
	if after.diskReads != before.diskReads || after.diskWrites != before.diskWrites {
		t.Errorf("redis-only route used the disk: reads %d → %d, writes %d → %d", before.diskReads, after.diskReads, before.diskWrites, after.diskWrites)
	}
	if d := diffStats(before.cmds, after.cmds); d["get"] == 0 || d["set"] == 0 && d["evalsha"] == 0 {
		t.Errorf("redis-only route's commands: %v; want GETs and writes", d)
	}
	if after.keys <= before.keys {
		t.Errorf("redis-only route stored nothing in redis: DBSIZE %d → %d", before.keys, after.keys)
	}
	if after.memEntries != before.memEntries {
		t.Errorf("redis-only route changed memory: %d → %d entries", before.memEntries, after.memEntries)
	}

	// The counters do move for a route that has the disk.
	before = after
	workload("dsk:")
	after = snap()
	if after.diskWrites <= before.diskWrites {
		t.Errorf("disk route wrote nothing to disk: writes %d → %d", before.diskWrites, after.diskWrites)
	}
	t.Logf("disk route: %d disk reads, %d disk writes, redis %v", after.diskReads-before.diskReads, after.diskWrites-before.diskWrites, diffStats(before.cmds, after.cmds))
}
