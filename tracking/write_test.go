package tracking

import (
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestWriteTickets checks the contract tiered's write paths rest on: a
// write's next ticket stays valid until the key is written or invalidated
// again, and a write under a ticket that was overtaken removes the entry.
func TestWriteTickets(t *testing.T) {
	c := newLocal(t, nil)
	if c.Valid(Ticket{}) {
		t.Fatal("the zero Ticket is valid")
	}

	before := c.Reserve("k")
	next, valid, err := c.Write("k", &Item{Value: []byte("v1")}, 0, nil)
	if err != nil || !valid {
		t.Fatalf("unconditional Write = %v, %v; want valid", valid, err)
	}
	mustGet(t, c, "k", "v1")
	if c.Valid(before) {
		t.Error("a ticket taken before a write is still valid after it")
	}
	if !c.Valid(next) {
		t.Fatal("Write's next ticket is not valid right after the write")
	}
	if c.Fill(before, "k", item("old"), true) || c.FillLocal(before, "k", item("old")) {
		t.Error("a fill under a ticket from before the write was accepted")
	}

	// A write under a ticket that another write overtook removes the
	// entry: the other write may be newer.
	stale := c.Reserve("k")
	if _, _, err := c.Write("k", &Item{Value: []byte("v2")}, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, valid, err := c.Write("k", &Item{Value: []byte("v3")}, 0, &stale); err != nil || valid {
		t.Fatalf("Write under an overtaken ticket = valid %v, %v; want invalid, entry removed", valid, err)
	}
	mustMiss(t, c, "k")

	// Invalidation ends next's validity; so does a write of the key.
	next, _, _ = c.Write("k", &Item{Value: []byte("v4")}, 0, nil)
	c.Invalidate("k")
	if c.Valid(next) {
		t.Error("next is still valid after an invalidation of its key")
	}
	next, _, _ = c.Write("k", nil, 0, nil)
	mustMiss(t, c, "k")
	c.InvalidatePrefix("")
	if c.Valid(next) {
		t.Error("next is still valid after InvalidatePrefix")
	}

	if _, _, err := c.Write("", &Item{}, 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Write(\"\") = %v, want ErrEmptyKey", err)
	}
	c.Close()
	if _, _, err := c.Write("k", nil, 0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

// TestWriteTicketRacingInvalidation forces the interleaving that left a
// value stale for good in tiered's Memory|Disk|Redis probe (1 key in 2,000,
// once in several CI runs): an invalidation bumps the key's generation
// (without a lock), and only then takes the shard lock to remove the entry;
// a Write holding that lock, between its ticket check and its own bump,
// inserts the entry the invalidation then removes. The next ticket it
// returned used to be read after both bumps, so it stayed valid after the
// removal: tiered trusted its disk copy under it, and a reader filled memory
// from that copy after the invalidation. next must be refused once the
// racing invalidation is applied, whatever moved the counter (a key's
// invalidation, InvalidatePrefix, an epoch bump).
func TestWriteTicketRacingInvalidation(t *testing.T) {
	races := []struct {
		name    string
		moved   func(c *Cache, key string) uint64 // the counter the race moves
		applies func(c *Cache, key string)
	}{
		{"Invalidate", func(c *Cache, key string) uint64 {
			h := c.hash(key)
			return c.shardOf(h).gens[slotOf(h)].Load()
		}, func(c *Cache, key string) { c.Invalidate(key) }},
		{"InvalidatePrefix", func(c *Cache, key string) uint64 {
			return c.shardOf(c.hash(key)).sgen.Load()
		}, func(c *Cache, _ string) { c.InvalidatePrefix("") }},
		{"epoch bump", func(c *Cache, _ string) uint64 { return c.epoch.Load() },
			func(c *Cache, _ string) { c.bumpEpoch() }},
	}
	for _, race := range races {
		for _, ticketed := range []bool{false, true} {
			name := race.name + "/unconditional"
			if ticketed {
				name = race.name + "/under a ticket"
			}
			t.Run(name, func(t *testing.T) {
				c := newLocal(t, nil)
				var done chan struct{}
				c.testInWrite = func(key string) {
					c.testInWrite = nil
					before := race.moved(c, key)
					done = make(chan struct{})
					go func() {
						defer close(done)
						race.applies(c, key) // blocks on the shard lock Write holds
					}()
					deadline := time.Now().Add(10 * time.Second)
					for race.moved(c, key) == before {
						if time.Now().After(deadline) {
							t.Error("the racing invalidation never moved its counter")
							return
						}
						runtime.Gosched()
					}
				}
				var after *Ticket
				if ticketed {
					tk := c.Reserve("k")
					after = &tk
				}
				next, valid, err := c.Write("k", &Item{Value: []byte("v")}, 0, after)
				if err != nil || !valid {
					t.Fatalf("Write = valid %v, %v; want valid (the race comes after its check)", valid, err)
				}
				<-done
				mustMiss(t, c, "k")
				if c.Valid(next) {
					t.Error("Write's next ticket is still valid after the invalidation that removed its entry")
				}
				if c.Fill(next, "k", item("v"), true) {
					t.Error("a fill under Write's next ticket was accepted after the racing invalidation")
				}
			})
		}
	}
}
