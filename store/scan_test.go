package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/thermoscache/thermos/store"
)

// TestScanViewMatchesScan: ScanView sees exactly what Scan sees, in the
// same order, under a prefix and for the whole store, and allocates
// nothing per entry.
func TestScanViewMatchesScan(t *testing.T) {
	db, _ := openT(t, "", nil)
	ctx := context.Background()
	for i := range 300 {
		ttl := time.Duration(0)
		if i%3 == 0 {
			ttl = time.Hour
		}
		if err := db.Set(ctx, fmt.Sprintf("p%d:%03d", i%2, i), []byte(fmt.Sprint("value ", i)), ttl); err != nil {
			t.Fatal(err)
		}
	}
	for _, prefix := range []string{"", "p1:"} {
		var want []string
		if err := db.Scan(ctx, prefix, func(key string, e store.Entry) error {
			want = append(want, fmt.Sprint(key, "=", string(e.Value), "@", e.Expiry.UnixNano()))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var got []string
		if err := db.ScanView(ctx, prefix, func(key []byte, e store.Entry) error {
			got = append(got, fmt.Sprint(string(key), "=", string(e.Value), "@", e.Expiry.UnixNano()))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ScanView(%q) = %v,\nScan gives %v", prefix, got, want)
		}
	}
	n := 0
	allocs := testing.AllocsPerRun(5, func() {
		n = 0
		_ = db.ScanView(ctx, "", func([]byte, store.Entry) error { n++; return nil })
	})
	t.Logf("ScanView of %d entries: %.0f allocations", n, allocs)
	if n != 300 {
		t.Errorf("ScanView saw %d entries, want 300", n)
	}
	if raceEnabled {
		return // see raceEnabled
	}
	if allocs > 30 { // an iterator's own, not one per entry
		t.Errorf("ScanView saw %d entries with %.0f allocations; want 300 with far fewer than one each", n, allocs)
	}
}

// TestEstimateEntries: the estimate counts what the tables hold once the
// memtable is flushed.
func TestEstimateEntries(t *testing.T) {
	db, _ := openT(t, "", nil)
	ctx := context.Background()
	const n = 500
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("e:%04d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FlushForTest(); err != nil {
		t.Fatal(err)
	}
	got, err := db.EstimateEntries()
	if err != nil {
		t.Fatal(err)
	}
	if got < n || got > 2*n {
		t.Errorf("EstimateEntries() = %d after %d sets and a flush, want about %d", got, n, n)
	}
}
