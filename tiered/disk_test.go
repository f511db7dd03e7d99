package tiered

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// TestDiskHitAllocations: a hit on a Disk-only route allocates no more
// than the store's Get it makes (the value's copy): no ticket, no copy of
// the entry for fills there are none of. The bound leaves half an
// allocation for the race detector dropping pooled items at random in
// either measurement.
func TestDiskHitAllocations(t *testing.T) {
	c := openT(t, &Options{Dir: filepath.Join(t.TempDir(), "disk"), Logger: quietLog, RequireRoute: true,
		Routes: []Route{{Prefix: "d:", Tiers: Disk, TTL: time.Hour}}})
	keys := setFlushed(t, c)
	db := c.disk.wb.db.Load()
	tiered := getAllocs(t, c, keys)
	stored := storeGetAllocs(t, db, keys)
	t.Logf("disk hit: %.2f allocations, store Get %.2f", tiered, stored)
	if tiered > stored+0.5 {
		t.Errorf("a Disk-only hit made %.2f allocations, its store Get %.2f: the tier adds some", tiered, stored)
	}
}

// setFlushed sets 202 keys d:0 … (AllocsPerRun calls once more to warm
// up) with "value <key>" and flushes them to the store.
func setFlushed(t *testing.T, c *Cache) []string {
	ctx := context.Background()
	keys := make([]string, 202)
	for i := range keys {
		keys[i] = "d:" + strconv.Itoa(i)
		if err := c.Set(ctx, keys[i], []byte("value "+keys[i]), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return keys
}

// getAllocs is the allocations of c's Get of keys, in turn (each must hit).
func getAllocs(t *testing.T, c *Cache, keys []string) float64 {
	ctx := context.Background()
	i := 0
	return testing.AllocsPerRun(200, func() {
		i = (i + 1) % len(keys)
		if v, ok, err := c.Get(ctx, keys[i]); err != nil || !ok || string(v) != "value "+keys[i] {
			t.Fatalf("Get(%s) = %q, %v, %v", keys[i], v, ok, err)
		}
	})
}

// storeGetAllocs is the allocations of db's Get of keys, in turn.
func storeGetAllocs(t *testing.T, db *store.DB, keys []string) float64 {
	ctx := context.Background()
	i := 0
	return testing.AllocsPerRun(200, func() {
		i = (i + 1) % len(keys)
		if _, ok, err := db.Get(ctx, keys[i]); err != nil || !ok {
			t.Fatalf("store Get(%s) = %v, %v", keys[i], ok, err)
		}
	})
}

// TestMemoryDiskMissAllocations: a Memory|Disk read that memory misses
// and the disk answers allocates the store's value copy and the memory
// tier's new entry, and nothing for passing the entry between the tiers
// (it allocated a copy of it, ~130 bytes, on every such read). Memory
// holds a few entries of the many read in turn, so nearly every read is
// such a one. Half an allocation of slack as in TestDiskHitAllocations.
func TestMemoryDiskMissAllocations(t *testing.T) {
	c := openT(t, &Options{Dir: filepath.Join(t.TempDir(), "disk"), Logger: quietLog, RequireRoute: true,
		MemoryBytes: 8 * (tracking.EntryOverhead + 64),
		Routes:      []Route{{Prefix: "d:", Tiers: Memory | Disk, TTL: time.Hour}}})
	keys := setFlushed(t, c)
	db := c.disk.wb.db.Load()
	before := c.Stats().Routes[0]
	tiered := getAllocs(t, c, keys)
	after := c.Stats().Routes[0]
	stored := storeGetAllocs(t, db, keys)
	if disk := after.DiskHits - before.DiskHits; disk < 190 {
		t.Fatalf("%d of 201 reads were disk hits: memory answered the rest, so the test measures nothing", disk)
	}
	t.Logf("memory miss, disk hit: %.2f allocations, store Get %.2f", tiered, stored)
	if tiered > stored+1.5 {
		t.Errorf("a Memory|Disk read that memory missed made %.2f allocations, its store Get %.2f: more than the memory entry added", tiered, stored)
	}
}

// TestDiskOnlyGet: Get on a Disk-only route (its own path, getDisk)
// answers as the tiers' read does: a hit from the store or from the
// write-behind queue, counted as a disk hit (a store read counted in
// DiskReads, a queued op not) and recorded as SourceDisk; a miss, counted,
// for a missing key, a copy past its soft expiry (stale: Get never serves
// it, GetOrLoad may) or its hard expiry, and a copy whose envelope fails
// its checksum inside a valid store record (refused, counted in
// DiskCorrupt, dropped).
func TestDiskOnlyGet(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	c := openT(t, &Options{Dir: filepath.Join(t.TempDir(), "disk"), Logger: quietLog, Clock: clk,
		WriteBehind: time.Hour, Routes: []Route{{Prefix: "d:", Tiers: Disk, TTL: time.Minute, MaxStale: time.Hour, Beta: -1}}})
	set := func(key string) {
		t.Helper()
		if err := c.Set(ctx, key, []byte("value "+key), 0); err != nil {
			t.Fatal(err)
		}
	}
	set("d:stored")
	set("d:stale")
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	db := c.disk.wb.db.Load()
	se, ok, err := db.Get(ctx, "d:stored")
	if err != nil || !ok {
		t.Fatalf("store Get = %v, %v", ok, err)
	}
	bad := append([]byte(nil), se.Value...)
	bad[len(bad)-1] ^= 0x20 // the envelope's checksum no longer matches
	if err := db.SetExpiry(ctx, "d:corrupt", bad, se.Expiry); err != nil {
		t.Fatal(err)
	}
	set("d:queued") // stays queued: WriteBehind is an hour, and no Flush

	type counts struct{ hits, misses, reads, corrupt int64 }
	read := func() counts {
		st := c.Stats()
		return counts{st.Routes[0].DiskHits, st.Routes[0].Misses, st.DiskReads, st.DiskCorrupt}
	}
	check := func(key string, hit bool, want counts) {
		t.Helper()
		before := read()
		var src Sources
		v, ok, err := c.Get(WithSources(ctx, &src), key)
		switch {
		case err != nil:
			t.Fatalf("Get(%s) = %v", key, err)
		case ok != hit || hit && string(v) != "value "+key:
			t.Fatalf("Get(%s) = %q, %v; want hit %v", key, v, ok, hit)
		}
		if s, read := src.Source(key); hit && (!read || s != SourceDisk) {
			t.Errorf("Get(%s) recorded source %v, %v; want %v", key, s, read, SourceDisk)
		}
		after := read()
		got := counts{after.hits - before.hits, after.misses - before.misses, after.reads - before.reads, after.corrupt - before.corrupt}
		if got != want {
			t.Errorf("Get(%s) counted %+v, want %+v", key, got, want)
		}
	}
	check("d:stored", true, counts{hits: 1, reads: 1})
	check("d:queued", true, counts{hits: 1})
	check("d:missing", false, counts{misses: 1, reads: 1})
	check("d:corrupt", false, counts{misses: 1, reads: 1, corrupt: 1})
	clk.Advance(2 * time.Minute) // past the TTL, within MaxStale
	check("d:stale", false, counts{misses: 1, reads: 1})
	if v, ok, err := c.GetOrLoad(ctx, "d:stale", LoaderFunc(func(context.Context, string) ([]byte, error) {
		return nil, errors.New("origin down")
	})); err != nil || !ok || string(v) != "value d:stale" {
		t.Fatalf("GetOrLoad of a stale copy = %q, %v, %v; want it served stale", v, ok, err)
	}
	clk.Advance(2 * time.Hour) // past MaxStale: gone
	check("d:stored", false, counts{misses: 1, reads: 1})
}
