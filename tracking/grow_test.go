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

// TestMarkUnchanged: a ticket taken after a Mark is Unchanged only while
// nothing touched its key, its shard or the whole cache since the Mark:
// every kind of change, local or from Redis, makes it false.
func TestMarkUnchanged(t *testing.T) {
	tests := []struct {
		name    string
		change  func(c *Cache)
		changed bool
	}{
		{"nothing", func(*Cache) {}, false},
		{"another key's fill", func(c *Cache) { c.Fill(c.Reserve("m:other"), "m:other", Item{Value: []byte("v")}, false) }, false},
		{"invalidation", func(c *Cache) { c.Invalidate("m:key") }, true},
		{"local write", func(c *Cache) { _ = c.SetLocal("m:key", Item{Value: []byte("w")}) }, true},
		{"prefix invalidation", func(c *Cache) { c.InvalidatePrefix("m:") }, true},
		{"epoch bump", func(c *Cache) { c.bumpEpoch() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(context.Background(), &Options{MaxBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m := c.Mark()
			if !c.Fill(c.Reserve("m:key"), "m:key", Item{Value: []byte("v")}, false) {
				t.Fatal("fill refused")
			}
			tt.change(c)
			if got := m.Unchanged(c.Reserve("m:key")); got != !tt.changed {
				t.Errorf("Unchanged after %s = %v, want %v", tt.name, got, !tt.changed)
			}
			if m.Unchanged(Ticket{}) {
				t.Error("the zero Ticket is Unchanged")
			}
		})
	}
}
