package tracking

import (
	"context"
	"fmt"
	"testing"
)

// TestGrowAheadOfFill: after Grow(n), n inserts rebuild (nearly) no shard's
// index, every entry stays findable, and Grow keeps what the cache already
// holds.
func TestGrowAheadOfFill(t *testing.T) {
	c, err := New(context.Background(), &Options{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := func(i int) string { return fmt.Sprintf("g:%06d", i) }
	for i := range 100 {
		if err := c.SetLocal(key(i), Item{Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20000
	c.Grow(n)
	tables := make([]*table, len(c.shards))
	for i := range c.shards {
		tables[i] = c.shards[i].idx.t.Load()
	}
	for i := 100; i < 100+n; i++ {
		if err := c.SetLocal(key(i), Item{Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	rebuilt := 0
	for i := range c.shards {
		if c.shards[i].idx.t.Load() != tables[i] {
			rebuilt++
		}
	}
	// Shards fill unevenly (the hash seed is random): a few may outgrow
	// their share; without Grow every shard rebuilds many times.
	if rebuilt > len(c.shards)/4 {
		t.Errorf("%d of %d shards rebuilt their index after Grow(%d)", rebuilt, len(c.shards), n)
	}
	for i := range 100 + n {
		if _, _, ok := c.Get(key(i)); !ok {
			t.Fatalf("%s missing", key(i))
		}
	}
	// A Grow the budget cannot use is capped: the tables stay small.
	c.Grow(1 << 40)
	for i := range c.shards {
		if g := len(c.shards[i].idx.t.Load().groups); g > 1<<20 {
			t.Fatalf("shard %d: %d groups after an oversized Grow", i, g)
		}
	}
}
