package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/thermoscache/thermos/store"
	"go.uber.org/goleak"
)

// checkRefused asserts that every read and write of db fails with an error
// wrapping ErrDiskFault and cause.
func checkRefused(t *testing.T, db *store.DB, cause error) {
	t.Helper()
	ctx := context.Background()
	if err := db.Err(); !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, cause) {
		t.Fatalf("Err() = %v, want ErrDiskFault wrapping %v", err, cause)
	}
	ops := []struct {
		name string
		op   func() error
	}{
		{"Set", func() error { return db.Set(ctx, "x", []byte("v"), 0) }},
		{"SetExpiry", func() error { return db.SetExpiry(ctx, "x", []byte("v"), time.Time{}) }},
		{"Delete", func() error { return db.Delete(ctx, "k0") }},
		{"Get", func() error { _, _, err := db.Get(ctx, "k0"); return err }},
		{"Scan", func() error { return db.Scan(ctx, "", func(string, store.Entry) error { return nil }) }},
		{"Sweep", func() error { return db.Sweep(ctx) }},
		{"Sync", func() error { return db.Sync(ctx) }},
		{"Commit", func() error {
			b := db.NewBatch()
			if err := b.Set("x", []byte("v"), 0); err != nil {
				return err
			}
			return b.Commit(ctx)
		}},
		{"CommitSync", func() error {
			b := db.NewBatch()
			if err := b.Delete("k0"); err != nil {
				return err
			}
			return b.CommitSync(ctx)
		}},
	}
	for _, o := range ops {
		if err := o.op(); !errors.Is(err, store.ErrDiskFault) {
			t.Errorf("%s in the error state = %v, want ErrDiskFault", o.name, err)
		}
	}
	if st := db.Stats(); !errors.Is(st.Err, store.ErrDiskFault) {
		t.Errorf("Stats().Err = %v, want ErrDiskFault", st.Err)
	}
}

// checkHealed asserts that db works again and still holds k0..k(n-1).
func checkHealed(t *testing.T, db *store.DB, n int) {
	t.Helper()
	ctx := context.Background()
	if err := db.Err(); err != nil {
		t.Fatalf("Err() after Recover = %v, want nil", err)
	}
	for i := range n {
		e, ok, err := db.Get(ctx, fmt.Sprintf("k%d", i))
		if err != nil || !ok || string(e.Value) != fmt.Sprint(i) {
			t.Fatalf("acknowledged k%d after Recover = %q, %v, %v", i, e.Value, ok, err)
		}
	}
	if err := db.Set(ctx, "healed", []byte("yes"), 0); err != nil {
		t.Fatalf("Set after Recover = %v", err)
	}
	b := db.NewBatch()
	_ = b.Set("healed2", []byte("yes"), 0)
	if err := b.CommitSync(ctx); err != nil {
		t.Fatalf("CommitSync after Recover = %v", err)
	}
	if e, ok := mustGet(t, db, "healed"); !ok || string(e.Value) != "yes" {
		t.Fatalf("Get(healed) = %q, %v", e.Value, ok)
	}
}

// TestRecoverAfterENOSPC: a full disk under the WAL puts the store in its
// error state, visibly; Recover fails while the disk stays full, and once
// it has room again Recover reopens the directory in place with every
// acknowledged write intact.
func TestRecoverAfterENOSPC(t *testing.T) {
	for _, d := range []store.Durability{store.Sync, store.NoSync} {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "db")
			inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
			db := openFaulty(t, dir, inj, store.Options{Durability: d, SyncInterval: time.Hour, CloseTimeout: 2 * time.Second})
			const n = 100
			for i := range n {
				if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Sync(ctx); err != nil { // acknowledged and durable
				t.Fatal(err)
			}
			inj.on.Store(true)
			// Under Sync the next write fails; under NoSync it may be
			// acknowledged from memory, but Sync reports the fault.
			err := db.Set(ctx, "lost", []byte("v"), 0)
			if d == store.Sync && !errors.Is(err, store.ErrDiskFault) {
				t.Fatalf("synced Set on a full disk = %v, want ErrDiskFault", err)
			}
			if err := db.Sync(ctx); !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Sync on a full disk = %v, want ErrDiskFault wrapping ENOSPC", err)
			}
			checkRefused(t, db, syscall.ENOSPC)

			// Still full: Recover reports the fault, the store stays refused.
			if err := db.Recover(ctx); !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Recover on a still-full disk = %v, want ErrDiskFault wrapping ENOSPC", err)
			}
			checkRefused(t, db, syscall.ENOSPC)
			if got := db.Stats().Reopens; got != 0 {
				t.Fatalf("Stats().Reopens after a failed Recover = %d, want 0", got)
			}
			// The faulted instance is closed, but the directory stays ours.
			if other, err := store.Open(dir, &store.Options{Logger: quietLogger(t)}); !errors.Is(err, store.ErrLocked) {
				if other != nil {
					other.Close()
				}
				t.Fatalf("Open of the directory while Recover is pending = %v, want ErrLocked", err)
			}

			inj.on.Store(false)
			if err := db.Recover(ctx); err != nil {
				t.Fatalf("Recover after the disk has room = %v", err)
			}
			if got := db.Stats().Reopens; got != 1 {
				t.Fatalf("Stats().Reopens = %d, want 1", got)
			}
			checkHealed(t, db, n)
			if err := db.Recover(ctx); err != nil { // healthy: a no-op
				t.Fatalf("Recover of a healthy store = %v", err)
			}
			if err := db.Close(); err != nil {
				t.Fatalf("Close after Recover = %v", err)
			}
			// What Recover's instance wrote is on disk for the next Open.
			db2, _ := openT(t, dir, nil)
			checkHealed(t, db2, n)
		})
	}
}

// TestRecoverWaitsForWedgedInstance: a failing sstable write leaves a
// Pebble flush retrying forever, so the faulted instance cannot close:
// Recover gives up after CloseTimeout and leaves the store refused; once
// the disk works again the flush ends, the instance closes, and the next
// Recover reopens the directory.
func TestRecoverWaitsForWedgedInstance(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".sst")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: 500 * time.Millisecond, SweepInterval: -1})
	const n = 100
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	inj.on.Store(true)
	if err := db.FlushForTest(); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("flush onto a full disk = %v, want ErrDiskFault", err)
	}
	checkRefused(t, db, syscall.ENOSPC)
	if err := db.Recover(ctx); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Recover with the old instance wedged = %v, want ErrDiskFault", err)
	}
	checkRefused(t, db, syscall.ENOSPC)
	inj.on.Store(false)
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for err = db.Recover(ctx); err != nil && time.Now().Before(deadline); err = db.Recover(ctx) {
		// The flush retries with backoff; Recover waits CloseTimeout each time.
	}
	if err != nil {
		t.Fatalf("Recover after the disk has room = %v", err)
	}
	checkHealed(t, db, n)
}

// TestRecoverCanceled: Recover respects its context while it waits.
func TestRecoverCanceled(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".sst")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: time.Minute, SweepInterval: -1})
	if err := db.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	inj.on.Store(true)
	_ = db.FlushForTest() // wedges the instance until the disk has room
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := db.Recover(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recover with a wedged instance and a 100ms ctx = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Recover took %v with a 100ms ctx", el)
	}
	inj.on.Store(false)
	if err := db.Recover(context.Background()); err != nil {
		t.Fatalf("Recover after the disk has room = %v", err)
	}
	if e, ok := mustGet(t, db, "k"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get(k) = %q, %v", e.Value, ok)
	}
}

// TestBatchAcrossRecover: a batch started before a Recover commits to the
// new instance.
func TestBatchAcrossRecover(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
	db := openFaulty(t, dir, inj, store.Options{})
	b := db.NewBatch()
	if err := b.Set("early", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	inj.on.Store(true)
	if err := db.Set(ctx, "x", nil, 0); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Set on a full disk = %v", err)
	}
	inj.on.Store(false)
	if err := db.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("Commit of a batch begun before Recover = %v", err)
	}
	if e, ok := mustGet(t, db, "early"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get(early) = %q, %v", e.Value, ok)
	}
}

// TestCommitSyncOnNoSync: on a NoSync DB, CommitSync makes its batch (and
// everything before it) survive a power loss, and Sync does the same for
// what was written so far, while plain NoSync writes after them are lost.
// The power loss is simulated by a crash clone of an in-memory filesystem
// that keeps exactly what was synced.
func TestCommitSyncOnNoSync(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewCrashableMem()
	o := &store.Options{FS: fs, Durability: store.NoSync, SyncInterval: time.Hour, SweepInterval: -1, Logger: quietLogger(t)}
	db, err := store.Open("/db", o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Set(ctx, "gone", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "before", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	_ = b.Delete("gone")
	_ = b.Set("synced", []byte("v"), 0)
	if err := b.CommitSync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "after", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}

	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	o2 := *o
	o2.FS = crashed
	db2, err := store.Open("/db", &o2)
	if err != nil {
		t.Fatalf("Open after the crash = %v", err)
	}
	defer db2.Close()
	want := map[string]bool{"gone": false, "before": true, "synced": true, "after": false}
	for k, w := range want {
		if _, ok := mustGet(t, db2, k); ok != w {
			t.Errorf("after a power loss, %s present = %v, want %v", k, ok, w)
		}
	}
}

// TestOpenOnFullDisk: Open on a disk that refuses every write returns
// promptly with an error wrapping ErrDiskFault and ENOSPC, for a new
// directory and for an existing store; once the disk has room the same
// directory opens with its data.
func TestOpenOnFullDisk(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	existing := filepath.Join(base, "existing")
	db, _ := openT(t, existing, nil)
	if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	inj := &injector{err: syscall.ENOSPC, match: writes("")}
	inj.on.Store(true)
	o := &store.Options{FS: errorfs.Wrap(vfs.Default, inj), Logger: quietLogger(t), CloseTimeout: 5 * time.Second}
	for _, dir := range []string{filepath.Join(base, "new"), existing} {
		start := time.Now()
		db, err := store.Open(dir, o)
		el := time.Since(start)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%s) on a full disk succeeded", dir)
		}
		if !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Open(%s) on a full disk = %v, want ErrDiskFault wrapping ENOSPC", dir, err)
		}
		if el > 5*time.Second {
			t.Errorf("Open(%s) on a full disk took %v", dir, el)
		}
	}
	if inj.hits.Load() == 0 {
		t.Fatalf("no error was injected")
	}
	inj.on.Store(false)
	db, err := store.Open(existing, o)
	if err != nil {
		t.Fatalf("Open once the disk has room = %v", err)
	}
	defer db.Close()
	if e, ok := mustGet(t, db, "k"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get(k) = %q, %v", e.Value, ok)
	}
}

// TestRecoverLeaksNothing: a fault, a failed and a successful Recover, and
// Close leave no goroutine behind.
func TestRecoverLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
	db := openFaulty(t, dir, inj, store.Options{Durability: store.NoSync, SyncInterval: time.Millisecond, SweepInterval: time.Millisecond})
	inj.on.Store(true)
	for db.Err() == nil {
		_ = db.Set(ctx, "k", []byte("v"), 0)
		_ = db.Sync(ctx)
	}
	if err := db.Recover(ctx); err == nil {
		t.Fatalf("Recover on a full disk = nil")
	}
	inj.on.Store(false)
	if err := db.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
