package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
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

// wedge leaves a call in flight on db's Pebble instance until the returned
// function is called (as a disk that hangs would).
func wedge(t *testing.T, db *store.DB) (unwedge func()) {
	t.Helper()
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller stops waiting at once; the call stays in flight
	if err := db.RunAsyncForTest(ctx, func() error { <-release; return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("wedged call with a canceled ctx = %v, want context.Canceled", err)
	}
	var once sync.Once
	unwedge = func() { once.Do(func() { close(release) }) }
	t.Cleanup(unwedge)
	return unwedge
}

// TestRecoverWaitsForWedgedInstance: a faulted instance with a call stuck
// in Pebble cannot close: Recover gives up after CloseTimeout and leaves
// the store refused; once the call returns, the instance closes and the
// next Recover reopens the directory.
func TestRecoverWaitsForWedgedInstance(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: 500 * time.Millisecond, SweepInterval: -1})
	const n = 100
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	unwedge := wedge(t, db)
	inj.on.Store(true)
	if err := db.Set(ctx, "x", []byte("v"), 0); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Set on a full disk = %v, want ErrDiskFault", err)
	}
	inj.on.Store(false)
	err := db.Recover(ctx)
	if !errors.Is(err, store.ErrDiskFault) || !strings.Contains(err.Error(), "still busy") {
		t.Fatalf("Recover with the old instance wedged = %v, want ErrDiskFault (still busy)", err)
	}
	checkRefused(t, db, syscall.ENOSPC)
	unwedge()
	// The old instance closes once the call returns; each Recover waits
	// up to CloseTimeout for that.
	waitFor(t, "Recover to reopen the store", func() bool { err = db.Recover(ctx); return err == nil })
	checkHealed(t, db, n)
}

// TestRecoverWhileFlushFails: a flush that fails (no room for sstables)
// puts the store in its error state, and Pebble would retry it forever.
// Recover closes the faulted instance at once all the same; while the disk
// still refuses sstables, reopening (which must flush the replayed log)
// cannot finish, and Recover says so promptly, every time; once the disk
// has room, the pending reopen finishes and the next Recover heals the
// store with every acknowledged write. Close then leaves nothing behind.
func TestRecoverWhileFlushFails(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".sst")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: time.Minute, SweepInterval: -1})
	const n = 100
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	inj.on.Store(true)
	if err := db.FlushForTest(); !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush onto a full disk = %v, want ErrDiskFault wrapping ENOSPC", err)
	}
	checkRefused(t, db, syscall.ENOSPC)
	for i := range 3 {
		start := time.Now()
		err := db.Recover(ctx)
		if !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Recover %d while sstables fail = %v, want ErrDiskFault wrapping ENOSPC", i, err)
		}
		// Not CloseTimeout (a minute): the faulted instance closes at once,
		// and the pending reopen is not waited for.
		if el := time.Since(start); el > 20*time.Second {
			t.Fatalf("Recover %d while sstables fail took %v", i, el)
		}
		checkRefused(t, db, syscall.ENOSPC)
	}
	inj.on.Store(false)
	waitFor(t, "Recover to reopen the store", func() bool { return db.Recover(ctx) == nil })
	checkHealed(t, db, n)
	if err := db.Close(); err != nil {
		t.Fatalf("Close after Recover = %v", err)
	}
}

// TestRecoverCanceled: Recover respects its context while it waits.
func TestRecoverCanceled(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: time.Minute, SweepInterval: -1})
	if err := db.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	unwedge := wedge(t, db)
	inj.on.Store(true)
	if err := db.Set(context.Background(), "x", []byte("v"), 0); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Set on a full disk = %v, want ErrDiskFault", err)
	}
	inj.on.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := db.Recover(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recover with a wedged instance and a 100ms ctx = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Recover took %v with a 100ms ctx", el)
	}
	unwedge()
	if err := db.Recover(context.Background()); err != nil {
		t.Fatalf("Recover once the call has returned = %v", err)
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

// noLeaks makes t fail unless every goroutine started after this call has
// ended by the time t's cleanups have run (call it first: it checks last).
// An instance's goroutines end soon after Close or Recover has closed it,
// but not necessarily before they return: the check waits for them, up to
// a deadline, but never for one that keeps running.
func noLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := goleak.Find(ignore) // itself retries for a while
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left behind: %v", err)
				return
			}
		}
	})
}

// TestRecoverLeaksNothing: a fault under the log or under a flush, a failed
// and a successful Recover, and Close leave no goroutine behind, although
// Pebble retries a failed flush for as long as it is open.
func TestRecoverLeaksNothing(t *testing.T) {
	for _, suffix := range []string{".log", ".sst"} {
		t.Run(suffix, func(t *testing.T) {
			noLeaks(t)
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "db")
			inj := &injector{err: syscall.ENOSPC, match: writes(suffix)}
			db := openFaulty(t, dir, inj, store.Options{Durability: store.NoSync, SyncInterval: time.Millisecond, SweepInterval: time.Millisecond})
			if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			inj.on.Store(true)
			for db.Err() == nil {
				_ = db.Set(ctx, "k", []byte("v"), 0)
				_ = db.Sync(ctx)
				_ = db.FlushForTest()
			}
			if err := db.Recover(ctx); err == nil {
				t.Fatalf("Recover on a full disk = nil")
			}
			inj.on.Store(false)
			waitFor(t, "Recover to reopen the store", func() bool { return db.Recover(ctx) == nil })
			if err := db.Set(ctx, "k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCloseWhenFlushFails: Close of a healthy store whose flush at Close
// fails (the disk is full) returns the fault without waiting for
// CloseTimeout, although Pebble would retry the flush forever; it releases
// the directory, which opens with every acknowledged write once the disk
// has room, and leaves no goroutine behind.
func TestCloseWhenFlushFails(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".sst")}
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: time.Minute, SweepInterval: -1})
	const n = 100
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	inj.on.Store(true)
	start := time.Now()
	err := db.Close()
	if !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close with a failing flush = %v, want ErrDiskFault wrapping ENOSPC", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("Close with a failing flush took %v (CloseTimeout is a minute)", el)
	}
	inj.on.Store(false)
	db2, _ := openT(t, dir, nil)
	checkHealed(t, db2, n)
}

// TestOpenOnFullDiskAfterFault: a store that faulted and was closed without
// flushing leaves its acknowledged writes in the write-ahead log; Open on a
// disk that still refuses sstables must replay them, which needs a flush
// the disk refuses, and Pebble's Open waits for that flush forever. Open
// returns promptly with the fault all the same; the directory stays locked
// while Pebble keeps trying; once the disk has room Pebble's open finishes
// and closes, the directory opens with every acknowledged write, and
// nothing is left behind.
func TestOpenOnFullDiskAfterFault(t *testing.T) {
	noLeaks(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".log")}
	db := openFaulty(t, dir, inj, store.Options{SweepInterval: -1})
	const n = 10
	for i := range n {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	inj.on.Store(true)
	if err := db.Set(ctx, "x", []byte("v"), 0); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Set on a full disk = %v", err)
	}
	if err := db.Close(); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Close in the error state = %v", err)
	}
	// Nearly full: the small files Pebble writes at Open fit, the sstable
	// of the replayed log does not.
	inj.match = writes(".sst")
	o := &store.Options{FS: errorfs.Wrap(vfs.Default, inj), Logger: quietLogger(t), SweepInterval: -1, CloseTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() {
		db, err := store.Open(dir, o)
		if err == nil {
			db.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Open on a full disk with a log to replay = %v, want ErrDiskFault wrapping ENOSPC", err)
		}
	case <-time.After(20 * time.Second):
		inj.on.Store(false)
		<-done
		t.Fatalf("Open on a full disk with a log to replay did not return within 20s")
	}
	// Pebble is still trying to open it.
	if db, err := store.Open(dir, o); !errors.Is(err, store.ErrLocked) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open while the first one is pending = %v, want ErrLocked", err)
	}
	inj.on.Store(false)
	waitFor(t, "the pending open to release the directory", func() bool {
		var err error
		db, err = store.Open(dir, o)
		return err == nil
	})
	for i := range n {
		if e, ok := mustGet(t, db, fmt.Sprintf("k%d", i)); !ok || string(e.Value) != fmt.Sprint(i) {
			t.Fatalf("acknowledged k%d after the disk healed = %q, %v", i, e.Value, ok)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
