package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/store"
)

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// quietLogger keeps expected warnings out of test output unless -v.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// openT opens a store in a fresh temp dir (or dir, if non-empty) and closes
// it at the end of the test.
func openT(t testing.TB, dir string, o *store.Options) (*store.DB, string) {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "db")
	}
	if o == nil {
		o = &store.Options{}
	}
	if o.Logger == nil {
		o.Logger = quietLogger(t)
	}
	db, err := store.Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, dir
}

func mustGet(t *testing.T, db *store.DB, key string) (store.Entry, bool) {
	t.Helper()
	e, ok, err := db.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q) error = %v", key, err)
	}
	return e, ok
}

func TestSetGetDelete(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	db, _ := openT(t, "", &store.Options{Clock: mc, SweepInterval: -1})

	if _, ok := mustGet(t, db, "a"); ok {
		t.Fatalf("Get(a) on empty store hit")
	}
	if err := db.Set(ctx, "a", []byte("one"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "b", []byte("two"), time.Minute); err != nil {
		t.Fatal(err)
	}
	e, ok := mustGet(t, db, "a")
	if !ok || string(e.Value) != "one" || !e.Expiry.IsZero() {
		t.Fatalf("Get(a) = %q, %v, expiry %v; want one, true, none", e.Value, ok, e.Expiry)
	}
	e, ok = mustGet(t, db, "b")
	if want := epoch.Add(time.Minute); !ok || string(e.Value) != "two" || !e.Expiry.Equal(want) {
		t.Fatalf("Get(b) = %q, %v, expiry %v; want two, true, %v", e.Value, ok, e.Expiry, want)
	}
	// The payload is the caller's: changing it changes nothing stored.
	e.Value[0] = 'X'
	if e, _ = mustGet(t, db, "b"); string(e.Value) != "two" {
		t.Fatalf("Get(b) after modifying a returned payload = %q, want two", e.Value)
	}
	// Overwrite, then delete.
	if err := db.Set(ctx, "a", []byte("uno"), 0); err != nil {
		t.Fatal(err)
	}
	if e, _ = mustGet(t, db, "a"); string(e.Value) != "uno" {
		t.Fatalf("Get(a) after overwrite = %q, want uno", e.Value)
	}
	if err := db.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustGet(t, db, "a"); ok {
		t.Fatalf("Get(a) after Delete hit")
	}
	if err := db.Delete(ctx, "never-set"); err != nil {
		t.Fatalf("Delete(missing) = %v, want nil", err)
	}
	// Empty values are values.
	if err := db.Set(ctx, "empty", nil, 0); err != nil {
		t.Fatal(err)
	}
	if e, ok = mustGet(t, db, "empty"); !ok || len(e.Value) != 0 {
		t.Fatalf("Get(empty) = %q, %v; want empty, true", e.Value, ok)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	db, _ := openT(t, "", &store.Options{Clock: mc, SweepInterval: -1})

	if err := db.Set(ctx, "ttl", []byte("v"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := db.SetExpiry(ctx, "abs", []byte("v"), epoch.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.SetExpiry(ctx, "past", []byte("v"), epoch.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "forever", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	check := func(want map[string]bool) {
		t.Helper()
		for k, w := range want {
			if _, ok := mustGet(t, db, k); ok != w {
				t.Errorf("at %v: Get(%q) ok = %v, want %v", mc.Now().Sub(epoch), k, ok, w)
			}
		}
		seen := map[string]bool{}
		if err := db.Scan(ctx, "", func(k string, _ store.Entry) error { seen[k] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		for k, w := range want {
			if seen[k] != w {
				t.Errorf("at %v: Scan saw %q = %v, want %v", mc.Now().Sub(epoch), k, seen[k], w)
			}
		}
	}
	check(map[string]bool{"ttl": true, "abs": true, "past": false, "forever": true})
	mc.Advance(5 * time.Second) // expiry is inclusive: at the instant, gone
	check(map[string]bool{"ttl": true, "abs": false, "past": false, "forever": true})
	mc.Advance(5 * time.Second)
	check(map[string]bool{"ttl": false, "abs": false, "past": false, "forever": true})

	if err := db.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	st := db.Stats()
	if st.Expired != 3 || st.Entries != 1 {
		t.Fatalf("after Sweep: Expired = %d, Entries = %d; want 3, 1", st.Expired, st.Entries)
	}
}

// TestValueRoundTrip: values are opaque bytes, returned exactly as given
// whatever they hold, and expiries come back as given (in UTC, clamped to
// what the store can represent).
func TestValueRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", &store.Options{Clock: clock.NewManual(epoch), SweepInterval: -1})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	values := map[string][]byte{
		"empty":       {},
		"bytes":       all,
		"magic":       store.EncodeForTest([]byte("a record inside a record"), 42),
		"zeros":       make([]byte, 1000),
		"large":       bytes.Repeat([]byte("thermos"), 100_000),
		"nul-key\x00": []byte("\x00\xff"),
	}
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	expiries := []struct {
		name     string
		in, want time.Time
		hit      bool
	}{
		{"none", time.Time{}, time.Time{}, true},
		{"ns precision", epoch.Add(time.Hour + 7), epoch.Add(time.Hour + 7), true},
		{"other zone", epoch.Add(time.Hour).In(time.FixedZone("x", 3600)), epoch.Add(time.Hour), true},
		{"far future", far, time.Unix(0, math.MaxInt64).UTC(), true},
		{"before 1970", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, false},
		{"unix epoch", time.Unix(0, 0), time.Time{}, false},
	}
	for name, v := range values {
		for _, x := range expiries {
			key := name + "/" + x.name
			if err := db.SetExpiry(ctx, key, v, x.in); err != nil {
				t.Fatal(err)
			}
			e, ok := mustGet(t, db, key)
			if ok != x.hit {
				t.Fatalf("Get(%q) ok = %v, want %v", key, ok, x.hit)
			}
			if !ok {
				continue
			}
			if !bytes.Equal(e.Value, v) {
				t.Fatalf("Get(%q) value differs: %d bytes, want %d", key, len(e.Value), len(v))
			}
			if !e.Expiry.Equal(x.want) || (!e.Expiry.IsZero() && e.Expiry.Location() != time.UTC) {
				t.Fatalf("Get(%q) expiry = %v, want %v in UTC", key, e.Expiry, x.want)
			}
		}
	}
	n := 0
	if err := db.Scan(ctx, "", func(k string, e store.Entry) error {
		if name, _, _ := strings.Cut(k, "/"); !bytes.Equal(e.Value, values[name]) {
			t.Errorf("Scan %q value differs", k)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := len(values) * 4; n != want {
		t.Fatalf("Scan saw %d entries, want %d", n, want)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	for _, d := range []store.Durability{store.Sync, store.NoSync} {
		t.Run(d.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			o := &store.Options{Durability: d, Logger: quietLogger(t)}
			db, err := store.Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 100 {
				if err := db.Set(ctx, fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db, _ = openT(t, dir, o)
			for i := range 100 {
				e, ok := mustGet(t, db, fmt.Sprintf("k%03d", i))
				if !ok || string(e.Value) != fmt.Sprint(i) {
					t.Fatalf("after reopen Get(k%03d) = %q, %v", i, e.Value, ok)
				}
			}
			if st := db.Stats(); st.Durability != d {
				t.Fatalf("Stats().Durability = %v, want %v", st.Durability, d)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", nil)
	if err := db.Set(ctx, "gone", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	for i := range 10 {
		if err := b.Set(fmt.Sprintf("b%d", i), []byte{byte(i)}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetExpiry("abs", []byte("a"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	// Bad input is refused and leaves the batch as it was.
	if err := b.Set("", []byte("x"), 0); !errors.Is(err, store.ErrEmptyKey) {
		t.Fatalf("Batch.Set(\"\") = %v, want ErrEmptyKey", err)
	}
	if err := b.Set("neg", []byte("x"), -time.Second); !errors.Is(err, store.ErrInvalidTTL) {
		t.Fatalf("Batch.Set(ttl<0) = %v, want ErrInvalidTTL", err)
	}
	if b.Len() != 12 {
		t.Fatalf("Len() = %d, want 12", b.Len())
	}
	// Nothing is visible before Commit.
	if _, ok := mustGet(t, db, "b0"); ok {
		t.Fatalf("batch entry visible before Commit")
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if e, ok := mustGet(t, db, fmt.Sprintf("b%d", i)); !ok || !bytes.Equal(e.Value, []byte{byte(i)}) {
			t.Fatalf("Get(b%d) = %v, %v", i, e.Value, ok)
		}
	}
	if e, ok := mustGet(t, db, "abs"); !ok || string(e.Value) != "a" || e.Expiry.IsZero() {
		t.Fatalf("Get(abs) = %+v, %v; want a with an expiry", e, ok)
	}
	if _, ok := mustGet(t, db, "gone"); ok {
		t.Fatalf("Get(gone) hit after batched Delete")
	}
	if err := b.Commit(ctx); !errors.Is(err, store.ErrBatchDone) {
		t.Fatalf("second Commit = %v, want ErrBatchDone", err)
	}
	if err := b.Set("late", nil, 0); !errors.Is(err, store.ErrBatchDone) {
		t.Fatalf("Set after Commit = %v, want ErrBatchDone", err)
	}
	b.Close() // safe after Commit

	// A closed batch commits nothing.
	b = db.NewBatch()
	if err := b.Set("discarded", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := b.Commit(ctx); !errors.Is(err, store.ErrBatchDone) {
		t.Fatalf("Commit after Close = %v, want ErrBatchDone", err)
	}
	if _, ok := mustGet(t, db, "discarded"); ok {
		t.Fatalf("closed batch was applied")
	}
	// An empty batch commits trivially.
	if err := db.NewBatch().Commit(ctx); err != nil {
		t.Fatalf("empty Commit = %v", err)
	}
}

func TestScanPrefix(t *testing.T) {
	ctx := context.Background()
	mc := clock.NewManual(epoch)
	db, _ := openT(t, "", &store.Options{Clock: mc})
	keys := []string{"a", "user:1", "user:2", "user:3", "user;", "users", "\xff\xff", "\xff\xff\x01", "z"}
	for _, k := range keys {
		if err := db.Set(ctx, k, []byte("v:"+k), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Set(ctx, "user:expired", []byte("x"), time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	mc.Advance(time.Nanosecond) // user:expired is never scanned
	tests := []struct {
		prefix string
		want   []string
	}{
		{"user:", []string{"user:1", "user:2", "user:3"}},
		{"user", []string{"user:1", "user:2", "user:3", "user;", "users"}},
		{"\xff\xff", []string{"\xff\xff", "\xff\xff\x01"}},
		{"nope", nil},
		{"", keys},
	}
	for _, tt := range tests {
		var got []string
		err := db.Scan(ctx, tt.prefix, func(k string, e store.Entry) error {
			if string(e.Value) != "v:"+k {
				t.Errorf("Scan(%q) entry %q payload = %q", tt.prefix, k, e.Value)
			}
			got = append(got, k)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !sameSet(got, tt.want) || !isSorted(got) {
			t.Errorf("Scan(%q) = %q, want %q in order", tt.prefix, got, tt.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := db.Scan(ctx, "user:", func(string, store.Entry) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("Scan with stopping fn = %v after %d calls, want stop after 1", err, n)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func isSorted(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	db, _ := openT(t, "", &store.Options{MaxKeyBytes: 8, MaxValueBytes: 16})
	if err := db.Set(ctx, "keep", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", 9)
	big := make([]byte, 17)
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"get empty key", func() error { _, _, err := db.Get(ctx, ""); return err }, store.ErrEmptyKey},
		{"get long key", func() error { _, _, err := db.Get(ctx, long); return err }, store.ErrKeyTooLarge},
		{"set empty key", func() error { return db.Set(ctx, "", []byte("x"), 0) }, store.ErrEmptyKey},
		{"set long key", func() error { return db.Set(ctx, long, []byte("x"), 0) }, store.ErrKeyTooLarge},
		{"set big value", func() error { return db.Set(ctx, "keep", big, 0) }, store.ErrValueTooLarge},
		{"set negative ttl", func() error { return db.Set(ctx, "keep", []byte("x"), -time.Nanosecond) }, store.ErrInvalidTTL},
		{"set expiry empty key", func() error { return db.SetExpiry(ctx, "", nil, time.Time{}) }, store.ErrEmptyKey},
		{"set expiry big", func() error { return db.SetExpiry(ctx, "keep", big, time.Time{}) }, store.ErrValueTooLarge},
		{"delete empty key", func() error { return db.Delete(ctx, "") }, store.ErrEmptyKey},
		{"delete long key", func() error { return db.Delete(ctx, long) }, store.ErrKeyTooLarge},
		{"batch long key", func() error { return db.NewBatch().Set(long, nil, 0) }, store.ErrKeyTooLarge},
		{"batch big value", func() error { return db.NewBatch().SetExpiry("keep", big, time.Time{}) }, store.ErrValueTooLarge},
		{"batch empty key", func() error { return db.NewBatch().SetExpiry("", nil, time.Time{}) }, store.ErrEmptyKey},
		{"batch delete empty", func() error { return db.NewBatch().Delete("") }, store.ErrEmptyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
			if e, ok := mustGet(t, db, "keep"); !ok || string(e.Value) != "kept" {
				t.Errorf("after refused op, Get(keep) = %q, %v; want kept", e.Value, ok)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		o    store.Options
	}{
		{"durability", store.Options{Durability: 7}},
		{"sync interval", store.Options{SyncInterval: -1}},
		{"max bytes", store.Options{MaxBytes: -1}},
		{"key limit", store.Options{MaxKeyBytes: -1}},
		{"key limit huge", store.Options{MaxKeyBytes: 1 << 30}},
		{"value limit", store.Options{MaxValueBytes: 1 << 40}},
		{"close timeout", store.Options{CloseTimeout: -1}},
		{"cache bytes", store.Options{CacheBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			db, err := store.Open(dir, &tt.o)
			if !errors.Is(err, store.ErrInvalidOptions) {
				t.Errorf("Open = %v, want ErrInvalidOptions", err)
			}
			if db != nil {
				db.Close()
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("Open with bad options created %s (stat err %v)", dir, err)
			}
		})
	}
	if _, err := store.Open("", nil); !errors.Is(err, store.ErrInvalidOptions) {
		t.Errorf("Open(\"\") = %v, want ErrInvalidOptions", err)
	}
}

func TestContextCanceled(t *testing.T) {
	db, _ := openT(t, "", nil)
	if err := db.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := map[string]func() error{
		"get":       func() error { _, _, err := db.Get(ctx, "k"); return err },
		"set":       func() error { return db.Set(ctx, "k", []byte("new"), 0) },
		"setexpiry": func() error { return db.SetExpiry(ctx, "k", []byte("new"), time.Time{}) },
		"sync":      func() error { return db.Sync(ctx) },
		"recover":   func() error { return db.Recover(ctx) },
		"delete":    func() error { return db.Delete(ctx, "k") },
		"scan":      func() error { return db.Scan(ctx, "", func(string, store.Entry) error { return nil }) },
		"sweep":     func() error { return db.Sweep(ctx) },
		"commit": func() error {
			b := db.NewBatch()
			_ = b.Set("k", []byte("new"), 0)
			return b.Commit(ctx)
		},
		"commitsync": func() error {
			b := db.NewBatch()
			_ = b.Set("k", []byte("new"), 0)
			return b.CommitSync(ctx)
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with canceled ctx = %v, want context.Canceled", name, err)
		}
	}
	if e, ok := mustGet(t, db, "k"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get(k) = %q, %v; want v unchanged", e.Value, ok)
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), &store.Options{Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := b.Set("k", nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ops := map[string]func() error{
		"get":     func() error { _, _, err := db.Get(ctx, "k"); return err },
		"set":     func() error { return db.Set(ctx, "k", nil, 0) },
		"delete":  func() error { return db.Delete(ctx, "k") },
		"scan":    func() error { return db.Scan(ctx, "", func(string, store.Entry) error { return nil }) },
		"sweep":   func() error { return db.Sweep(ctx) },
		"commit":  func() error { return b.Commit(ctx) },
		"batch":   func() error { return db.NewBatch().Set("k", nil, 0) },
		"sync":    func() error { return db.Sync(ctx) },
		"recover": func() error { return db.Recover(ctx) },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if st := db.Stats(); st.Err != nil {
		t.Errorf("Stats().Err after clean Close = %v", st.Err)
	}
}

func TestLocked(t *testing.T) {
	db, dir := openT(t, "", nil)
	_ = db
	_, err := store.Open(dir, &store.Options{Logger: quietLogger(t)})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open of %s = %v, want ErrLocked", dir, err)
	}
	if err := store.Wipe(dir); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Wipe of an open store = %v, want ErrLocked", err)
	}
	// The first DB still works.
	if err := db.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatalf("Set on first DB after refused Open = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, _ := openT(t, dir, nil)
	if _, ok := mustGet(t, db2, "k"); !ok {
		t.Fatalf("reopened store lost k")
	}
}

// TestLockedChild checks the lock across processes: a child process (this
// test binary) tries to open a directory the parent has open.
func TestLockedChild(t *testing.T) {
	if dir := os.Getenv("THERMOS_STORE_LOCK_CHILD"); dir != "" {
		_, err := store.Open(dir, &store.Options{Logger: slog.New(slog.DiscardHandler)})
		if errors.Is(err, store.ErrLocked) {
			fmt.Println("LOCKED")
			return
		}
		fmt.Printf("UNEXPECTED %v\n", err)
		return
	}
	_, dir := openT(t, "", nil)
	out := runChild(t, "TestLockedChild", "THERMOS_STORE_LOCK_CHILD="+dir)
	if !strings.Contains(out, "LOCKED") {
		t.Fatalf("child Open of a locked dir printed %q, want LOCKED", out)
	}
}

func TestIncompatible(t *testing.T) {
	t.Run("other format marker", func(t *testing.T) {
		db, dir := openT(t, "", nil)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "THERMOS-FORMAT"), []byte("thermos-store-format v9\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Open(dir, &store.Options{Logger: quietLogger(t)}); !errors.Is(err, store.ErrIncompatible) {
			t.Fatalf("Open with v9 marker = %v, want ErrIncompatible", err)
		}
	})
	t.Run("foreign directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Open(dir, &store.Options{Logger: quietLogger(t)}); !errors.Is(err, store.ErrIncompatible) {
			t.Fatalf("Open of a foreign dir = %v, want ErrIncompatible", err)
		}
		if err := store.Wipe(dir); !errors.Is(err, store.ErrIncompatible) {
			t.Fatalf("Wipe of a foreign dir = %v, want ErrIncompatible", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
			t.Fatalf("refused Wipe removed files: %v", err)
		}
	})
}

func TestWipe(t *testing.T) {
	ctx := context.Background()
	db, dir := openT(t, "", nil)
	if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.Wipe(dir); err != nil {
		t.Fatalf("Wipe = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("after Wipe, stat %s = %v", dir, err)
	}
	if err := store.Wipe(dir); err != nil {
		t.Fatalf("Wipe of a missing dir = %v", err)
	}
	db, _ = openT(t, dir, nil)
	if _, ok := mustGet(t, db, "k"); ok {
		t.Fatalf("wiped store still has k")
	}
}

func TestPermissions(t *testing.T) {
	ctx := context.Background()
	db, dir := openT(t, "", nil)
	for i := range 10 {
		if err := db.Set(ctx, fmt.Sprint(i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode = %o, want 700", perm)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 3 {
		t.Fatalf("store dir has %d files, expected Pebble's files", len(ents))
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s mode = %o, want owner-only", e.Name(), perm)
		}
	}
}

func TestMemFS(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMem()
	o := &store.Options{FS: fs, Logger: quietLogger(t)}
	db, err := store.Open("/db", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open("/db", o); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open on MemFS = %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open("/db", o)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := mustGet(t, db, "k"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get(k) after reopen on MemFS = %q, %v", e.Value, ok)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.WipeFS(fs, "/db"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat("/db"); err == nil {
		t.Fatalf("WipeFS left /db")
	}
}

// TestReopenReadsFromBlockCache: after Close and Open, a second read of
// every key finds its blocks in the store's block cache. (Without a flush at
// Close and a cache of the store's own, the replayed memtables took Pebble's
// whole default cache and every Get missed.)
func TestReopenReadsFromBlockCache(t *testing.T) {
	ctx := context.Background()
	db, dir := openT(t, "", &store.Options{Durability: store.NoSync, SweepInterval: -1})
	const n = 20_000
	val := make([]byte, 100)
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("key:%08d", i), val, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, _ = openT(t, dir, &store.Options{SweepInterval: -1})
	read := func() {
		for i := range n {
			if _, ok := mustGet(t, db, fmt.Sprintf("key:%08d", i)); !ok {
				t.Fatalf("key:%08d missing after reopen", i)
			}
		}
	}
	read() // loads the blocks
	_, _, miss0 := db.CacheMetricsForTest()
	read()
	size, hits, miss := db.CacheMetricsForTest()
	if miss != miss0 {
		t.Fatalf("second read of %d keys after reopen: %d block cache misses (cache holds %d bytes, %d hits), want 0", n, miss-miss0, size, hits)
	}
}
