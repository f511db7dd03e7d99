package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/store"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// entrySize is the logical size of a stored entry.
func entrySize(key string, value int) int64 {
	return int64(len(key) + value + store.EntryOverhead)
}

// TestEvictionPolicy fills the store over its budget with entries of known
// expiry; a pass evicts soonest expiry first, entries without expiry last,
// down to 90% of MaxBytes.
func TestEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	const n, payload = 100, 100
	one := entrySize("k000", payload)
	max := 50 * one // room for half of them
	// Fill without a budget, then reopen with one: the pass at open evicts.
	db, dir := openT(t, "", &store.Options{Clock: mc, SweepInterval: -1})
	// k000..k079 expire at i minutes (in shuffled write order), k080..k099 never.
	for j := range n {
		i := (j * 37) % n
		ttl := time.Duration(i+1) * time.Minute
		if i >= 80 {
			ttl = 0
		}
		if err := db.Set(ctx, fmt.Sprintf("k%03d", i), make([]byte, payload), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, _ = openT(t, dir, &store.Options{Clock: mc, MaxBytes: max, SweepInterval: -1})
	// The pass at open runs in the background; Sweep runs one of our own
	// after or instead of it (passes are serialised): either evicts.
	if err := db.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	st := db.Stats()
	if st.Bytes > max {
		t.Fatalf("after eviction Bytes = %d, over MaxBytes %d", st.Bytes, max)
	}
	low := max - max/10
	if st.Bytes > low {
		t.Fatalf("after eviction Bytes = %d, want <= low-water %d", st.Bytes, low)
	}
	kept := map[int]bool{}
	if err := db.Scan(ctx, "", func(k string, _ store.Entry) error {
		var i int
		fmt.Sscanf(k, "k%d", &i)
		kept[i] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if int64(len(kept))*one != st.Bytes || int64(len(kept)) != st.Entries {
		t.Fatalf("Stats = %d entries / %d bytes, Scan found %d entries", st.Entries, st.Bytes, len(kept))
	}
	if st.Evicted != int64(n-len(kept)) {
		t.Fatalf("Stats.Evicted = %d, want %d", st.Evicted, n-len(kept))
	}
	// What is kept is exactly the latest-expiring entries: the 20 without
	// expiry and the highest-expiry ones.
	for i := range n {
		want := i >= n-len(kept)
		if kept[i] != want {
			t.Fatalf("k%03d kept = %v, want %v (kept %d entries: latest expiry last to go)", i, kept[i], want, len(kept))
		}
	}
}

// TestEvictionInBackground: writes that push the estimate over MaxBytes
// start a pass on their own.
func TestEvictionInBackground(t *testing.T) {
	ctx := context.Background()
	const payload = 200
	max := 100 * entrySize("k0000", payload)
	db, _ := openT(t, "", &store.Options{MaxBytes: max, SweepInterval: -1})
	for i := range 300 {
		if err := db.Set(ctx, fmt.Sprintf("k%04d", i), make([]byte, payload), time.Hour+time.Duration(i)*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "background eviction", func() bool {
		st := db.Stats()
		return st.Evicted > 0 && st.Bytes <= max
	})
	// The newest (latest-expiring) entry survives.
	if _, ok := mustGet(t, db, "k0299"); !ok {
		t.Fatalf("latest-expiring entry was evicted")
	}
}

// TestSweeper: the background sweeper deletes expired entries on its own.
func TestSweeper(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	db, _ := openT(t, "", &store.Options{Clock: mc, SweepInterval: 5 * time.Millisecond})
	for i := range 50 {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), time.Duration(i%2+1)*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	mc.Advance(time.Minute) // half expire
	waitFor(t, "sweep of 25 entries", func() bool { return db.Stats().Expired == 25 })
	if _, found, _ := db.GetRawForTest("k0"); found {
		t.Fatalf("swept entry k0 still stored")
	}
	if _, ok := mustGet(t, db, "k1"); !ok {
		t.Fatalf("unexpired k1 was swept")
	}
	waitFor(t, "entry count", func() bool { return db.Stats().Entries == 25 })
}

// TestSweepNeverLosesAWrite: a sweep that found a key expired does not
// delete a fresh value written after it looked.
func TestSweepNeverLosesAWrite(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	db, _ := openT(t, "", &store.Options{Clock: mc, SweepInterval: -1, Durability: store.NoSync})
	const n = 2000
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("old"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	mc.Advance(time.Second)
	done := make(chan error, 1)
	go func() { done <- db.Sweep(ctx) }()
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("new"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if e, ok := mustGet(t, db, fmt.Sprintf("k%d", i)); !ok || string(e.Value) != "new" {
			t.Fatalf("k%d = %q, %v after a concurrent sweep; want new", i, e.Value, ok)
		}
	}
}

// TestNoSyncSyncsInBackground: under NoSync the WAL is synced every
// SyncInterval; observe it through the data surviving a reopen without the
// background sync being the only path is not possible in-process, so this
// checks that writes are acknowledged and readable, and Close persists them.
func TestNoSyncPersistsOnClose(t *testing.T) {
	ctx := context.Background()
	db, dir := openT(t, "", &store.Options{Durability: store.NoSync, SyncInterval: time.Millisecond})
	for i := range 1000 {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, _ = openT(t, dir, nil)
	for i := range 1000 {
		if _, ok := mustGet(t, db, fmt.Sprintf("k%d", i)); !ok {
			t.Fatalf("k%d lost across Close under NoSync", i)
		}
	}
}

// TestOpenMeasuresWithoutReading: after Open, the size estimates come from
// the tables' properties, not from a maintenance pass: a pass at Open would
// read every entry while the caller (a warm start) reads them too, and at a
// million entries the block cache holds too little for the two to share
// what they read. The reads it takes are compared with a Scan's.
func TestOpenMeasuresWithoutReading(t *testing.T) {
	ctx := context.Background()
	const n, payload = 20_000, 100
	key := func(i int) string { return fmt.Sprintf("k%06d", i) }
	db, dir := openT(t, "", &store.Options{SweepInterval: -1})
	b := db.NewBatch()
	for i := range n {
		if err := b.Set(key(i), make([]byte, payload), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // flushes: every entry is in a table
		t.Fatal(err)
	}
	inj := &injector{match: reads(".sst")} // counts, fails nothing
	inj.on.Store(true)
	db = openFaulty(t, dir, inj, store.Options{}) // sweeping on, every minute
	defer db.Close()
	waitFor(t, "the size estimates", func() bool { return db.Stats().Entries == n })
	measured := inj.hits.Load()
	st := db.Stats()
	if want := n * entrySize(key(0), payload); st.Bytes != want || st.Passes != 0 {
		t.Fatalf("after Open: Bytes = %d after %d passes, want %d after none", st.Bytes, st.Passes, want)
	}
	seen := 0
	if err := db.Scan(ctx, "", func(string, store.Entry) error { seen++; return nil }); err != nil {
		t.Fatal(err)
	}
	scanned := inj.hits.Load() - measured
	if seen != n || measured*10 > scanned {
		t.Fatalf("Open and its measure read the tables %d times, a Scan of %d entries (%d seen) %d times: want under a tenth", measured, n, seen, scanned)
	}
}

// TestEvictionAtOpen: a store reopened over its budget evicts without
// waiting for a sweep, though Open no longer runs a pass by default.
func TestEvictionAtOpen(t *testing.T) {
	ctx := context.Background()
	const n, payload = 100, 100
	one := entrySize("k000", payload)
	max := 50 * one
	for _, sweep := range []time.Duration{-1, time.Hour} {
		db, dir := openT(t, "", &store.Options{SweepInterval: -1})
		for i := range n {
			if err := db.Set(ctx, fmt.Sprintf("k%03d", i), make([]byte, payload), time.Duration(i+1)*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, _ = openT(t, dir, &store.Options{MaxBytes: max, SweepInterval: sweep})
		waitFor(t, fmt.Sprintf("eviction at Open (SweepInterval %v)", sweep), func() bool {
			st := db.Stats()
			return st.Passes > 0 && st.Evicted > 0 && st.Bytes <= max
		})
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
