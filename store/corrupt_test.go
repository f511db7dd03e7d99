package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/store"
)

func encode(value string) []byte { return store.EncodeForTest([]byte(value), 0) }

// TestCorruptWrittenByRawPebble corrupts an entry the way a bad disk or a
// foreign writer would: through Pebble itself, with the store closed.
func TestCorruptWrittenByRawPebble(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	db, _ := openT(t, dir, nil)
	if err := db.Set(ctx, "good", []byte("fine"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	raw := encode("right bytes")
	raw[len(raw)-1] ^= 0x01 // flip one value bit: "right byter"
	pdb, err := pebble.Open(dir, &pebble.Options{Logger: pebbleQuiet{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pdb.Set([]byte("bad"), raw, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := pdb.Close(); err != nil {
		t.Fatal(err)
	}

	db, _ = openT(t, dir, &store.Options{SweepInterval: -1})
	e, ok, err := db.Get(ctx, "bad")
	if ok || err != nil {
		t.Fatalf("Get(bad) = %q, %v, %v; want a miss without error", e.Value, ok, err)
	}
	if got := db.Stats().Corrupt; got != 1 {
		t.Fatalf("Stats().Corrupt = %d, want 1", got)
	}
	if _, found, err := db.GetRawForTest("bad"); err != nil || found {
		t.Fatalf("corrupt entry still stored after Get (found %v, err %v)", found, err)
	}
	if e, ok := mustGet(t, db, "good"); !ok || string(e.Value) != "fine" {
		t.Fatalf("Get(good) = %q, %v", e.Value, ok)
	}
}

// TestCorruptEveryByte flips each byte of a stored record in turn, and
// truncates it at every length: Get never returns the wrong bytes.
func TestCorruptEveryByte(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", &store.Options{SweepInterval: -1})
	good := encode("payload")
	var want int64
	for i := range good {
		raw := append([]byte(nil), good...)
		raw[i] ^= 0x5a
		key := fmt.Sprintf("flip%02d", i)
		if err := db.PutRawForTest(key, raw); err != nil {
			t.Fatal(err)
		}
		if e, ok, err := db.Get(ctx, key); ok || err != nil {
			t.Errorf("Get with byte %d flipped = %q, %v, %v; want miss", i, e.Value, ok, err)
		}
		want++
	}
	for n := range len(good) {
		key := fmt.Sprintf("torn%02d", n)
		if err := db.PutRawForTest(key, good[:n]); err != nil {
			t.Fatal(err)
		}
		if e, ok, err := db.Get(ctx, key); ok || err != nil {
			t.Errorf("Get of record torn at %d = %q, %v, %v; want miss", n, e.Value, ok, err)
		}
		want++
	}
	if got := db.Stats().Corrupt; got != want {
		t.Fatalf("Stats().Corrupt = %d, want %d", got, want)
	}
}

func TestCorruptSkippedByScanAndSweep(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", &store.Options{SweepInterval: -1})
	for _, k := range []string{"p:1", "p:3"} {
		if err := db.Set(ctx, k, []byte(k), 0); err != nil {
			t.Fatal(err)
		}
	}
	bad := encode("x")
	bad[0] = 0 // wrong magic
	for _, k := range []string{"p:2", "q:1"} {
		if err := db.PutRawForTest(k, bad); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := db.Scan(ctx, "p:", func(k string, e store.Entry) error {
		if string(e.Value) != k {
			t.Errorf("Scan entry %q payload %q", k, e.Value)
		}
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[p:1 p:3]" {
		t.Fatalf("Scan(p:) = %v, want [p:1 p:3]", keys)
	}
	if got := db.Stats().Corrupt; got != 1 {
		t.Fatalf("after Scan, Corrupt = %d, want 1", got)
	}
	if _, found, _ := db.GetRawForTest("p:2"); found {
		t.Fatalf("Scan left the corrupt entry p:2 in place")
	}
	if err := db.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := db.GetRawForTest("q:1"); found {
		t.Fatalf("Sweep left the corrupt entry q:1 in place")
	}
	if st := db.Stats(); st.Corrupt != 2 || st.Entries != 2 {
		t.Fatalf("after Sweep: Corrupt = %d, Entries = %d; want 2, 2", st.Corrupt, st.Entries)
	}
}

// TestDropCorruptNeverLosesAWrite races the deletion of a corrupt entry
// against a Set of a good value to the same key. Whatever the order, the
// good value survives: the delete checks, under the write lock, that the
// entry is still the corrupt one.
func TestDropCorruptNeverLosesAWrite(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", &store.Options{Durability: store.NoSync, SweepInterval: -1})
	bad := encode("x")
	bad[len(bad)-1] ^= 1
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		if err := db.PutRawForTest(key, bad); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, _, err := db.Get(ctx, key); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := db.Set(ctx, key, []byte("good"), 0); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		if e, ok := mustGet(t, db, key); !ok || string(e.Value) != "good" {
			t.Fatalf("round %d: Get(%s) = %q, %v; the concurrent Set was lost", i, key, e.Value, ok)
		}
	}
}

// pebbleQuiet keeps raw Pebble's open logging out of test output.
type pebbleQuiet struct{}

func (pebbleQuiet) Infof(string, ...any)  {}
func (pebbleQuiet) Errorf(string, ...any) {}
func (pebbleQuiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
