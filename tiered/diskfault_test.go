package tiered

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/goleak"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
)

// diskInjector fails the disk tier's filesystem operations that match
// selects with err while on: a full (ENOSPC), failing (EIO) or read-only
// (EROFS) disk, as the kernel reports them.
type diskInjector struct {
	on    atomic.Bool
	err   error
	match func(errorfs.Op) bool
	hits  atomic.Int64
}

func (i *diskInjector) String() string { return fmt.Sprintf("inject %v", i.err) }

func (i *diskInjector) MaybeError(op errorfs.Op) error {
	if i.on.Load() && i.match(op) {
		i.hits.Add(1)
		return i.err
	}
	return nil
}

func anyWrite(op errorfs.Op) bool { return op.Kind.ReadOrWrite() == errorfs.OpIsWrite }

func sstReads(op errorfs.Op) bool {
	return (op.Kind == errorfs.OpFileRead || op.Kind == errorfs.OpFileReadAt) && strings.HasSuffix(op.Path, ".sst")
}

// faultyDisk returns o with its disk tier on the real disk behind inj.
func faultyDisk(o *Options, inj *diskInjector) *Options {
	o.diskFS = errorfs.Wrap(vfs.Default, inj)
	if o.Logger == nil {
		o.Logger = quietLog
	}
	return o
}

// checkDiskOff asserts that c reports its disk tier off with cause, as Err,
// Stats and Flush say it.
func checkDiskOff(t *testing.T, c *Cache, cause error) {
	t.Helper()
	if err := c.Err(); !errors.Is(err, ErrDisk) || !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, cause) {
		t.Fatalf("Err() = %v, want ErrDisk wrapping store.ErrDiskFault and %v", err, cause)
	}
	st := c.Stats()
	if !errors.Is(st.DiskErr, ErrDisk) || !errors.Is(st.DiskErr, cause) {
		t.Fatalf("Stats().DiskErr = %v, want ErrDisk wrapping %v", st.DiskErr, cause)
	}
	if st.DiskFaults < 1 {
		t.Fatalf("Stats().DiskFaults = %d with the tier off", st.DiskFaults)
	}
	if err := c.Flush(context.Background()); !errors.Is(err, ErrDisk) || !errors.Is(err, cause) {
		t.Fatalf("Flush with the disk tier off = %v, want ErrDisk wrapping %v", err, cause)
	}
}

// waitHealed waits for c's disk tier to come back by itself.
func waitHealed(t *testing.T, c *Cache) {
	t.Helper()
	waitFor(t, 60*time.Second, func() bool { return c.Err() == nil }, "the disk tier to come back")
	if st := c.Stats(); st.DiskErr != nil || st.DiskRecoveries < 1 {
		t.Fatalf("healed: Stats().DiskErr = %v, DiskRecoveries = %d", st.DiskErr, st.DiskRecoveries)
	}
}

func wantValue(t *testing.T, c *Cache, key, want string) {
	t.Helper()
	v, ok := mustGet(t, c, key)
	if !ok || string(v) != want {
		t.Fatalf("Get(%q) = %q, %v; want %q", key, v, ok, want)
	}
}

func wantMiss(t *testing.T, c *Cache, key, why string) {
	t.Helper()
	if v, ok := mustGet(t, c, key); ok {
		t.Fatalf("Get(%q) = %q: %s", key, v, why)
	}
}

// TestDiskWriteFaultSyncWrites: on a Memory|Disk route with SyncWrites, a
// disk that fails under a Set (full, failing, read-only) makes that Set
// fail with ErrDisk wrapping the cause, and it is not served; memory goes
// on serving what it held; Err, Stats and Flush report the fault; once the
// disk works again the tier is back by itself and writes reach the disk,
// as a restart shows.
func TestDiskWriteFaultSyncWrites(t *testing.T) {
	for _, cause := range []error{syscall.ENOSPC, syscall.EIO, syscall.EROFS} {
		t.Run(cause.Error(), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			routes := []Route{{Prefix: "p:", Tiers: Memory | Disk, TTL: time.Hour}}
			inj := &diskInjector{err: cause, match: anyWrite}
			c := openT(t, faultyDisk(&Options{Dir: dir, SyncWrites: true, Routes: routes}, inj))
			for i := range 10 {
				if err := c.Set(ctx, fmt.Sprintf("p:k%d", i), []byte(fmt.Sprint(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			inj.on.Store(true)
			err := c.Set(ctx, "p:x", []byte("x"), 0)
			if !errors.Is(err, ErrDisk) || !errors.Is(err, cause) {
				t.Fatalf("Set with SyncWrites on a failing disk = %v, want ErrDisk wrapping %v", err, cause)
			}
			wantMiss(t, c, "p:x", "a Set that returned an error is served")
			for i := range 10 {
				wantValue(t, c, fmt.Sprintf("p:k%d", i), fmt.Sprint(i))
			}
			checkDiskOff(t, c, cause)
			// While off: Sets fail at once, without touching the disk.
			hits := inj.hits.Load()
			if err := c.Set(ctx, "p:y", []byte("y"), 0); !errors.Is(err, ErrDisk) || !errors.Is(err, cause) {
				t.Fatalf("Set with the disk tier off = %v, want ErrDisk wrapping %v", err, cause)
			}
			if got := c.Stats().DiskWritesSkipped; got < 1 {
				t.Fatalf("Stats().DiskWritesSkipped = %d after a Set with the tier off", got)
			}
			wantMiss(t, c, "p:y", "a Set that returned an error is served")
			_ = hits

			inj.on.Store(false)
			waitHealed(t, c)
			if err := c.Set(ctx, "p:z", []byte("z"), 0); err != nil {
				t.Fatalf("Set once the disk is back = %v", err)
			}
			wantValue(t, c, "p:z", "z")
			if err := c.Flush(ctx); err != nil {
				t.Fatalf("Flush once the disk is back = %v", err)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("Close once the disk is back = %v", err)
			}

			c2 := openT(t, &Options{Dir: dir, SyncWrites: true, Routes: routes, Logger: quietLog})
			wantValue(t, c2, "p:z", "z")
			for i := range 10 {
				wantValue(t, c2, fmt.Sprintf("p:k%d", i), fmt.Sprint(i))
			}
			wantMiss(t, c2, "p:x", "a Set that returned an error is on disk after a restart")
			wantMiss(t, c2, "p:y", "a Set that returned an error is on disk after a restart")
		})
	}
}

// TestDiskFaultDeleteNeverUndone: a Delete on a Memory|Disk route returns
// nil only once its tombstone is durable; during a disk fault it returns
// ErrDisk. After the disk heals and the process restarts — whether the
// tier came back first or the process was closed while the disk still
// failed — a key whose Delete returned nil is never served again (it was:
// the write-behind swallowed the failed tombstone). If the tier came back
// first, neither is a key whose Delete failed, nor the older disk copy of a
// key written while the tier was off.
func TestDiskFaultDeleteNeverUndone(t *testing.T) {
	for _, healFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("healed in process %v", healFirst), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			routes := []Route{{Prefix: "p:", Tiers: Memory | Disk, TTL: time.Hour}}
			c0 := openT(t, &Options{Dir: dir, Routes: routes, Logger: quietLog})
			for _, k := range []string{"p:a", "p:b", "p:c", "p:d", "p:e"} {
				if err := c0.Set(ctx, k, []byte("old"), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := c0.Close(); err != nil { // all durable
				t.Fatal(err)
			}
			inj := &diskInjector{err: syscall.ENOSPC, match: anyWrite}
			c := openT(t, faultyDisk(&Options{Dir: dir, Routes: routes, WriteBehind: time.Hour}, inj))
			// Healthy: Delete's tombstone is durable when it returns,
			// although write-behind batches are an hour apart here.
			if err := c.Delete(ctx, "p:c"); err != nil {
				t.Fatalf("Delete = %v", err)
			}
			inj.on.Store(true)
			deleted := []string{"p:c"}
			for _, k := range []string{"p:a", "p:e"} {
				err := c.Delete(ctx, k)
				switch {
				case err == nil:
					deleted = append(deleted, k)
				case !errors.Is(err, ErrDisk) || !errors.Is(err, syscall.ENOSPC):
					t.Fatalf("Delete(%s) on a full disk = %v, want nil or ErrDisk wrapping ENOSPC", k, err)
				}
				wantMiss(t, c, k, "served after its Delete")
			}
			if err := c.Set(ctx, "p:d", []byte("new"), 0); err != nil { // memory only while off
				t.Fatalf("Set with the disk tier off (write-behind) = %v", err)
			}
			wantValue(t, c, "p:d", "new")
			checkDiskOff(t, c, syscall.ENOSPC)

			if healFirst {
				inj.on.Store(false)
				waitHealed(t, c)
				if op, ok := c.disk.wb.lookup("p:d"); ok && op.data != nil {
					t.Fatalf("p:d queued with %q after the tier came back", op.data)
				}
				if err := c.Close(); err != nil {
					t.Fatalf("Close once the disk is back = %v", err)
				}
			} else {
				if err := c.Close(); !errors.Is(err, ErrDisk) || !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("Close with the disk tier off = %v, want ErrDisk wrapping ENOSPC", err)
				}
				inj.on.Store(false)
			}

			c2 := openT(t, &Options{Dir: dir, Routes: routes, Logger: quietLog})
			for _, k := range deleted {
				wantMiss(t, c2, k, "a key whose Delete returned nil is served after the disk healed and a restart")
			}
			wantValue(t, c2, "p:b", "old")
			if healFirst {
				for _, k := range []string{"p:a", "p:e"} {
					wantMiss(t, c2, k, "a key whose Delete failed is served after the tier came back and a restart")
				}
				if v, ok := mustGet(t, c2, "p:d"); ok && string(v) == "old" {
					t.Fatalf("p:d = %q after a restart: the disk copy older than an acknowledged Set", v)
				}
			}
		})
	}
}

// TestDiskFaultAtOpen: Open on a disk that refuses writes opens with the
// disk tier off (reported by Err) and the cache working from memory,
// unless DiskRequired; once the disk works, the tier opens by itself, and
// Close leaves no goroutine behind.
func TestDiskFaultAtOpen(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	dir := t.TempDir()
	routes := []Route{{Prefix: "p:", Tiers: Memory | Disk, TTL: time.Hour}}
	inj := &diskInjector{err: syscall.ENOSPC, match: anyWrite}
	inj.on.Store(true)

	strict := faultyDisk(&Options{Dir: dir, Routes: routes, DiskRequired: true}, inj)
	if c, err := Open(ctx, strict); !errors.Is(err, store.ErrDiskFault) || !errors.Is(err, syscall.ENOSPC) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("Open with DiskRequired on a full disk = %v, want store.ErrDiskFault wrapping ENOSPC", err)
	}

	c, err := Open(ctx, faultyDisk(&Options{Dir: dir, Routes: routes}, inj))
	if err != nil {
		t.Fatalf("Open on a full disk = %v, want the disk tier off", err)
	}
	checkDiskOff(t, c, syscall.ENOSPC)
	if err := c.Set(ctx, "p:k", []byte("v"), 0); err != nil {
		t.Fatalf("Set with the disk tier off = %v", err)
	}
	wantValue(t, c, "p:k", "v")
	if err := c.Delete(ctx, "p:k"); !errors.Is(err, ErrDisk) {
		t.Fatalf("Delete with the disk tier off = %v, want ErrDisk (its tombstone cannot be durable)", err)
	}
	wantMiss(t, c, "p:k", "served after its Delete")

	inj.on.Store(false)
	waitHealed(t, c)
	if err := c.Set(ctx, "p:k2", []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush once the disk is back = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close once the disk is back = %v", err)
	}
	noLeaks(t, ignore)

	c2 := openT(t, &Options{Dir: dir, Routes: routes, Logger: quietLog})
	wantValue(t, c2, "p:k2", "v2")
	wantMiss(t, c2, "p:k", "a deleted key is on disk")
}

// noLeaks fails t if goroutines other than ignore's are still running, up to
// a deadline (a closed store's goroutines end shortly after its Close).
func noLeaks(t *testing.T, ignore goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := goleak.Find(ignore)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind: %v", err)
		}
	}
}

// TestDiskReadFault: a read the disk fails (EIO) is a miss, not an error,
// and turns the tier off; once reads work, the tier is back and serves.
func TestDiskReadFault(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	routes := []Route{{Prefix: "d:", Tiers: Disk, TTL: time.Hour}}
	c := openT(t, &Options{Dir: dir, Routes: routes, Logger: quietLog})
	if err := c.Set(ctx, "d:k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // flushed to an sstable
		t.Fatal(err)
	}
	// On before Open: Open reads the sstables (the warm start's scan),
	// which would fill the block cache and spare the Get a read.
	inj := &diskInjector{err: syscall.EIO, match: sstReads}
	inj.on.Store(true)
	c = openT(t, faultyDisk(&Options{Dir: dir, Routes: routes}, inj))
	v, ok, err := c.Get(ctx, "d:k")
	if err != nil || ok {
		t.Fatalf("Get with failing reads = %q, %v, %v; want a miss", v, ok, err)
	}
	if inj.hits.Load() == 0 {
		t.Fatalf("no read failed")
	}
	checkDiskOff(t, c, syscall.EIO)
	inj.on.Store(false)
	waitHealed(t, c)
	wantValue(t, c, "d:k", "v")
}

// TestDiskFaultRedisRoute: on a route with Redis the disk holds copies, so
// a disk fault fails no write, even with SyncWrites: Set and Delete work,
// reads are served from memory and Redis, Err reports the fault, and the
// tier comes back.
func TestDiskFaultRedisRoute(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t, nil)
	routes := []Route{{Prefix: "r:", Tiers: Memory | Disk | Redis, TTL: time.Hour}}
	inj := &diskInjector{err: syscall.ENOSPC, match: anyWrite}
	c := openT(t, faultyDisk(&Options{Redis: redisOpts(s), Dir: t.TempDir(), SyncWrites: true, Routes: routes}, inj))
	if err := c.Set(ctx, "r:a", []byte("a"), 0); err != nil {
		t.Fatal(err)
	}
	inj.on.Store(true)
	if err := c.Set(ctx, "r:b", []byte("b"), 0); err != nil {
		t.Fatalf("Set on a Redis route with a full disk = %v, want nil (Redis holds it)", err)
	}
	if err := c.Set(ctx, "r:c", []byte("c"), 0); err != nil {
		t.Fatalf("Set with the disk tier off = %v", err)
	}
	if err := c.Delete(ctx, "r:a"); err != nil {
		t.Fatalf("Delete on a Redis route with the disk tier off = %v", err)
	}
	wantMiss(t, c, "r:a", "served after its Delete")
	wantValue(t, c, "r:b", "b")
	wantValue(t, c, "r:c", "c")
	checkDiskOff(t, c, syscall.ENOSPC)
	inj.on.Store(false)
	waitHealed(t, c)
	wantMiss(t, c, "r:a", "served after its Delete")
	wantValue(t, c, "r:b", "b")
	if err := c.Set(ctx, "r:d", []byte("d"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestDiskFaultSuspectsPurged: a key written while the tier was off has
// its older disk copy deleted before the tier serves again; past the
// bound on remembered keys, everything the disk held is deleted.
func TestDiskFaultSuspectsPurged(t *testing.T) {
	for _, n := range []int{1, maxSuspects + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := context.Background()
			routes := []Route{{Prefix: "p:", Tiers: Memory | Disk, TTL: time.Hour}}
			inj := &diskInjector{err: syscall.ENOSPC, match: anyWrite}
			c := openT(t, faultyDisk(&Options{Dir: t.TempDir(), Routes: routes}, inj))
			for _, k := range []string{"p:w0", "p:untouched"} {
				if err := c.Set(ctx, k, []byte("old"), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			inj.on.Store(true)
			if err := c.Set(ctx, "p:trigger", []byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, func() bool { return c.Err() != nil }, "the tier to turn off")
			for i := range n {
				if err := c.Set(ctx, fmt.Sprintf("p:w%d", i), []byte("new"), 0); err != nil {
					t.Fatal(err)
				}
			}
			inj.on.Store(false)
			waitHealed(t, c)
			if _, _, ok, err := c.disk.read(ctx, "p:w0"); err != nil || ok {
				t.Fatalf("disk copy of p:w0 after the tier came back: ok %v, err %v; want it deleted", ok, err)
			}
			_, _, ok, err := c.disk.read(ctx, "p:untouched")
			if err != nil || ok != (n <= maxSuspects) {
				t.Fatalf("disk copy of p:untouched after %d writes missed the disk: ok %v, err %v; want %v", n, ok, err, n <= maxSuspects)
			}
		})
	}
}

// TestDiskFaultInvalidatePrefix: InvalidatePrefix on a route without Redis
// fails with ErrDisk while the tier is off (its deletes cannot be durable),
// and the prefix's disk copies are gone once the tier is back, across a
// restart too.
func TestDiskFaultInvalidatePrefix(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	routes := []Route{{Prefix: "q:", Tiers: Memory | Disk, TTL: time.Hour}}
	inj := &diskInjector{err: syscall.ENOSPC, match: anyWrite}
	c := openT(t, faultyDisk(&Options{Dir: dir, Routes: routes}, inj))
	for _, k := range []string{"q:1", "q:2"} {
		if err := c.Set(ctx, k, []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	inj.on.Store(true)
	if err := c.Delete(ctx, "q:3"); !errors.Is(err, ErrDisk) {
		t.Fatalf("Delete on a full disk = %v, want ErrDisk", err)
	}
	if _, err := c.InvalidatePrefix(ctx, "q:"); !errors.Is(err, ErrDisk) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("InvalidatePrefix with the disk tier off = %v, want ErrDisk wrapping ENOSPC", err)
	}
	wantMiss(t, c, "q:1", "served after InvalidatePrefix")
	inj.on.Store(false)
	waitHealed(t, c)
	wantMiss(t, c, "q:1", "served after InvalidatePrefix and the tier's return")
	if _, err := c.InvalidatePrefix(ctx, "q:"); err != nil {
		t.Fatalf("InvalidatePrefix once the disk is back = %v", err)
	}
	// Neither Flush nor Close has reported the fault yet: Close does, once,
	// although the tier is back.
	if err := c.Close(); !errors.Is(err, ErrDisk) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close after an unreported fault = %v, want ErrDisk wrapping ENOSPC", err)
	}
	c2 := openT(t, &Options{Dir: dir, Routes: routes, Logger: quietLog})
	wantMiss(t, c2, "q:1", "served after InvalidatePrefix, the tier's return and a restart")
	wantMiss(t, c2, "q:2", "served after InvalidatePrefix, the tier's return and a restart")
}

// BenchmarkDiskDelete: a Delete on a Memory|Disk route returns once its
// tombstone is durable; its cost against the floor, a store delete
// committed with an fsync on a store of the same kind (NoSync).
func BenchmarkDiskDelete(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Dir: b.TempDir(), Logger: quietLog, Routes: []Route{{Prefix: "bench:", Tiers: Memory | Disk, TTL: time.Hour}}})
	db, err := store.Open(b.TempDir(), &store.Options{Durability: store.NoSync, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := c.Delete(ctx, benchKey(i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("store-sync", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			bt := db.NewBatch()
			_ = bt.Delete(benchKey(i))
			if err := bt.CommitSync(ctx); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
