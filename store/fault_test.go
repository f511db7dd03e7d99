package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/thermoscache/thermos/store"
)

// injector fails the filesystem operations match selects with err while on.
type injector struct {
	on    atomic.Bool
	err   error
	match func(errorfs.Op) bool
	hits  atomic.Int64
}

func (i *injector) String() string { return fmt.Sprintf("inject %v", i.err) }

func (i *injector) MaybeError(op errorfs.Op) error {
	if i.on.Load() && i.match(op) {
		i.hits.Add(1)
		return i.err
	}
	return nil
}

func writes(suffix string) func(errorfs.Op) bool {
	return func(op errorfs.Op) bool {
		return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, suffix)
	}
}

func reads(suffix string) func(errorfs.Op) bool {
	return func(op errorfs.Op) bool {
		return (op.Kind == errorfs.OpFileReadAt || op.Kind == errorfs.OpFileRead) && strings.HasSuffix(op.Path, suffix)
	}
}

// openFaulty opens a store on the real disk behind an error-injecting FS.
func openFaulty(t *testing.T, dir string, inj *injector, o store.Options) *store.DB {
	t.Helper()
	o.FS = errorfs.Wrap(vfs.Default, inj)
	o.Logger = quietLogger(t)
	if o.CloseTimeout == 0 {
		o.CloseTimeout = 5 * time.Second
	}
	db, err := store.Open(dir, &o)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	return db
}

// checkErrorState asserts the store is in its error state caused by cause,
// refuses reads and writes with a typed error, and recovers by Close, Wipe
// and Open, coming back empty.
func checkErrorState(t *testing.T, db *store.DB, dir string, cause error) {
	t.Helper()
	ctx := context.Background()
	ferr := db.Err()
	if !errors.Is(ferr, store.ErrDiskFault) || !errors.Is(ferr, cause) {
		t.Fatalf("Err() = %v, want ErrDiskFault wrapping %v", ferr, cause)
	}
	if st := db.Stats(); !errors.Is(st.Err, store.ErrDiskFault) {
		t.Fatalf("Stats().Err = %v, want ErrDiskFault", st.Err)
	}
	if err := db.Set(ctx, "after", []byte("v"), 0); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Set in error state = %v, want ErrDiskFault", err)
	}
	b := db.NewBatch()
	_ = b.Set("after", []byte("v"), 0)
	if err := b.Commit(ctx); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Batch.Commit in error state = %v, want ErrDiskFault", err)
	}
	if err := db.Delete(ctx, "k0"); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Delete in error state = %v, want ErrDiskFault", err)
	}
	if _, _, err := db.Get(ctx, "k0"); !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Get in error state = %v, want ErrDiskFault", err)
	}
	start := time.Now()
	err := db.Close()
	el := time.Since(start)
	t.Logf("Close in error state took %v: %v", el, err)
	if !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Close in error state = %v, want the fault (ErrDiskFault)", err)
	}
	if strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("Close in error state abandoned Pebble after %v: %v", el, err)
	}
	if err := store.Wipe(dir); err != nil {
		t.Fatalf("Wipe after error state = %v", err)
	}
	db2, _ := openT(t, dir, nil)
	n := 0
	if err := db2.Scan(ctx, "", func(string, store.Entry) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("reopened wiped store: Scan saw %d entries, err %v; want empty", n, err)
	}
	if err := db2.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatalf("Set on reopened store = %v", err)
	}
	if e, ok := mustGet(t, db2, "k"); !ok || string(e.Value) != "v" {
		t.Fatalf("Get on reopened store = %q, %v", e.Value, ok)
	}
}

func TestFaultWALWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    store.Durability
		err  error
	}{
		{"sync/ENOSPC", store.Sync, syscall.ENOSPC},
		{"sync/EIO", store.Sync, syscall.EIO},
		{"nosync/ENOSPC", store.NoSync, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "db")
			inj := &injector{err: tc.err, match: writes(".log")}
			db := openFaulty(t, dir, inj, store.Options{Durability: tc.d, SyncInterval: 5 * time.Millisecond})
			for i := range 10 {
				if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), 0); err != nil {
					t.Fatal(err)
				}
			}
			inj.on.Store(true)
			// Sync: the very next write fails. NoSync: writes are acknowledged
			// from memory until the WAL flush fails (at the latest at the next
			// sync, 5ms away); then they fail.
			var err error
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; err == nil && time.Now().Before(deadline); i++ {
				err = db.Set(ctx, fmt.Sprintf("new%d", i), []byte("v"), 0)
				if tc.d == store.Sync && err == nil {
					t.Fatalf("synced Set acknowledged while the WAL fails")
				}
			}
			if !errors.Is(err, store.ErrDiskFault) {
				t.Fatalf("Set with failing WAL = %v, want ErrDiskFault", err)
			}
			if inj.hits.Load() == 0 {
				t.Fatalf("no error was injected")
			}
			checkErrorState(t, db, dir, tc.err)
		})
	}
}

func TestFaultFlushENOSPC(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.ENOSPC, match: writes(".sst")}
	// Pebble retries the failed flush for as long as it is open: Close
	// must close it all the same, within CloseTimeout, and leave nothing
	// running (checkErrorState closes db).
	noLeaks(t)
	db := openFaulty(t, dir, inj, store.Options{CloseTimeout: time.Minute})
	for i := range 100 {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	inj.on.Store(true)
	err := db.FlushForTest()
	t.Logf("flush: %v", err)
	if db.Err() == nil {
		t.Fatalf("no error state after a failed flush (flush returned %v)", err)
	}
	checkErrorState(t, db, dir, syscall.ENOSPC)
}

func TestFaultReadEIO(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	inj := &injector{err: syscall.EIO, match: reads(".sst")}
	db := openFaulty(t, dir, inj, store.Options{SweepInterval: -1})
	for i := range 100 {
		if err := db.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FlushForTest(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen cold (empty block cache), then fail every sstable read.
	db = openFaulty(t, dir, inj, store.Options{SweepInterval: -1})
	inj.on.Store(true)
	_, ok, err := db.Get(ctx, "k1")
	if ok || !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Get with failing reads = %v, %v; want ErrDiskFault", ok, err)
	}
	if inj.hits.Load() == 0 {
		t.Fatalf("no error was injected")
	}
	checkErrorState(t, db, dir, syscall.EIO)
}

func TestPanicBecomesErrorState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openFaulty(t, dir, &injector{match: writes("")}, store.Options{})
	err := db.RunAsyncForTest(context.Background(), func() error { panic("pebble: invariant violated") })
	if !errors.Is(err, store.ErrDiskFault) || !strings.Contains(err.Error(), "invariant violated") {
		t.Fatalf("panicking Pebble call = %v, want ErrDiskFault with the panic", err)
	}
	checkErrorState(t, db, dir, store.ErrDiskFault)
}

// TestCloseAbandonsWedgedPebble wedges a Pebble call forever (as a stalled
// disk would): Close gives up after CloseTimeout, releases the directory, and
// the directory can be wiped and reopened in the same process.
func TestCloseAbandonsWedgedPebble(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openFaulty(t, dir, &injector{match: writes("")}, store.Options{CloseTimeout: 200 * time.Millisecond})
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller stops waiting at once; the call stays in flight
	if err := db.RunAsyncForTest(ctx, func() error { <-release; return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("wedged call with canceled ctx = %v, want context.Canceled", err)
	}
	start := time.Now()
	err := db.Close()
	if !errors.Is(err, store.ErrDiskFault) {
		t.Fatalf("Close with a wedged call = %v, want ErrDiskFault", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close took %v, want about CloseTimeout", el)
	}
	if err := store.Wipe(dir); err != nil {
		t.Fatalf("Wipe after abandon = %v", err)
	}
	db2, _ := openT(t, dir, nil)
	if err := db2.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatalf("Set after abandon, wipe and reopen = %v", err)
	}
}
