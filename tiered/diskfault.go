package tiered

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// Disk faults. A disk fault (store.ErrDiskFault: a full, failing or
// read-only disk) turns the disk tier off: reads skip it (a miss), fills
// skip it, acknowledged writes and deletes skip it and their keys are
// remembered as suspects, since the disk may hold an older copy of them,
// or a copy a delete could not remove. A prober owned by the tier calls
// store.Recover (or store.Open, if the store never opened) with backoff;
// once the store works again, the suspects' disk copies are deleted
// (durably) before the tier serves or takes writes again. Past
// maxSuspects keys or maxSuspectPrefixes prefixes, nothing on disk is
// trusted: every entry is deleted instead.
//
// What needs the disk fails while it is off: on a route without Redis, the
// disk is the record, so a Delete (always) and a Set (with SyncWrites)
// return ErrDisk rather than be acknowledged without it. On a route with
// Redis the disk only holds copies that Redis vouches for, so a disk fault
// fails no write.

const (
	// diskProbeMin and diskProbeMax bound the prober's backoff: it tries
	// diskProbeMin after the fault, then doubles the wait up to
	// diskProbeMax.
	diskProbeMin = 100 * time.Millisecond
	diskProbeMax = 5 * time.Second

	// maxSuspects and maxSuspectPrefixes bound what the tier remembers
	// while it is off (a key is at most Options.MaxKeyBytes).
	maxSuspects        = 1 << 16
	maxSuspectPrefixes = 64

	// purgeBatch is how many deletes one batch of the purge commits.
	purgeBatch = 1024
)

// suspects are what the disk may hold wrongly after writes it did not
// take: keys, key prefixes (an InvalidatePrefix), or, past the bounds,
// everything (overflow).
type suspects struct {
	keys     map[string]struct{}
	prefixes []string
	overflow bool
}

func (s *suspects) addKey(key string) {
	switch {
	case s.overflow:
	case len(s.keys) >= maxSuspects:
		*s = suspects{overflow: true}
	default:
		if s.keys == nil {
			s.keys = make(map[string]struct{})
		}
		s.keys[key] = struct{}{}
	}
}

func (s *suspects) addPrefix(prefix string) {
	switch {
	case s.overflow:
	case prefix == "" || len(s.prefixes) >= maxSuspectPrefixes:
		*s = suspects{overflow: true}
	default:
		s.prefixes = append(s.prefixes, prefix)
	}
}

func (s *suspects) merge(o suspects) {
	if o.overflow {
		*s = suspects{overflow: true}
		return
	}
	for k := range o.keys {
		s.addKey(k)
	}
	for _, p := range o.prefixes {
		s.addPrefix(p)
	}
}

// asDiskFault is err, a fault of the disk, as this package reports it.
func asDiskFault(err error) error { return newFault(ErrDisk, err, "") }

// isDiskFault reports whether err is a fault of the disk (not of the
// caller's input, context or a closed store).
func isDiskFault(err error) bool { return errors.Is(err, store.ErrDiskFault) }

// stepAside turns the tier off on err, a disk fault met outside the
// write-behind (a read, a scan, the store's own report), and returns the
// tier's fault (wrapping ErrDisk).
func (d *diskTier) stepAside(err error) error {
	first, fault := d.wb.stepAside(asDiskFault(err), nil)
	if first {
		d.faulted(fault)
	}
	return fault
}

// faulted follows the tier's turning off: counted, logged, every trust
// record dropped (a copy trusted before may have missed a later write),
// and the prober woken.
func (d *diskTier) faulted(fault error) {
	d.trust.reset()
	d.log.Error("tiered: disk tier off: reads and writes skip it until the disk heals", "err", fault)
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// fault returns the tier's fault while it is off. It also notices a fault
// the store entered by itself (a background flush or compaction).
func (d *diskTier) fault() error { return d.wb.checkStore() }

// Err returns nil while every tier works, else the fault of a tier that
// has stepped aside: today only the disk tier's, an error wrapping ErrDisk
// and its cause (store.ErrDiskFault and, where known, syscall.ENOSPC,
// syscall.EIO or syscall.EROFS). The cache heals by itself: Err returns
// nil again once the tier is back. After Close it returns ErrClosed.
func (c *Cache) Err() error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.disk != nil {
		return c.disk.fault()
	}
	return nil
}

// health fills st's disk-fault fields.
func (d *diskTier) health(st *Stats) {
	st.DiskErr = d.fault()
	st.DiskFaults = d.wb.faults.Load()
	st.DiskRecoveries = d.wb.recoveries.Load()
	st.DiskWritesSkipped = d.wb.skipped.Load()
}

// diskWrite is the disk side of an acknowledged write, for its caller to
// wait on (see diskTier.write).
type diskWrite struct {
	d    *diskTier
	op   *diskOp // nil: nothing to wait for, err says how it went
	err  error
	key  string
	next tracking.Ticket // the memory write's
	// undo: a Set the disk is the record of, undone in memory if the disk
	// does not take it; copy: the disk holds a copy of Redis, and a disk
	// fault does not fail the write.
	undo, copy bool
}

// wait waits for the write's commit (if it needs one) and returns the
// error the write must fail with, if any.
func (w diskWrite) wait(ctx context.Context) error {
	if w.op == nil {
		return w.err
	}
	err := w.d.wb.wait(ctx, w.op)
	switch {
	case err == nil:
		return nil
	case w.copy && errors.Is(err, ErrDisk):
		return nil // Redis holds the write; the disk tier stepped aside
	case w.undo:
		unlock := w.d.lock(w.key)
		w.d.unwriteLocked(w.key, w.next)
		unlock()
	}
	return err
}

// unwriteLocked removes from memory the value of a Set that the disk did
// not take (it is not acknowledged: it must not be served), unless a later
// write or invalidation of key came since. The disk copy is a suspect by
// then, or still queued. REQUIRES: key's stripe lock, which every write of
// key holds from its memory write to its disk write.
func (d *diskTier) unwriteLocked(key string, next tracking.Ticket) {
	if d.mem.Valid(next) {
		_, _, _ = d.mem.Write(key, nil, 0, nil)
	}
}

// startProber starts the goroutine that heals the tier; close stops it.
func (d *diskTier) startProber() {
	d.ctx, d.cancel = context.WithCancel(context.Background())
	go d.probe()
	if d.wb.fault() != nil {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// stopProber stops the prober and waits for it.
func (d *diskTier) stopProber() {
	d.cancel()
	<-d.probed
}

// probe waits for the tier to turn off, then tries to heal it, waiting
// diskProbeMin at first and twice as long after each failure, up to
// diskProbeMax, until it is back.
func (d *diskTier) probe() {
	defer close(d.probed)
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.kick:
		}
		delay := diskProbeMin
		for d.wb.fault() != nil {
			t := time.NewTimer(delay)
			select {
			case <-d.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			err := d.heal(d.ctx)
			if err == nil {
				break
			}
			d.log.Debug("tiered: disk tier still off", "err", err, "retry_in", min(2*delay, diskProbeMax))
			delay = min(2*delay, diskProbeMax)
		}
	}
}

// heal brings the store back (Recover, or Open if it never opened),
// deletes the suspects' disk copies, durably, and turns the tier back on.
// While it runs the tier is still off: nothing is queued, nothing read.
func (d *diskTier) heal(ctx context.Context) error {
	db := d.wb.db.Load()
	if db == nil {
		var err error
		if db, err = openStore(d.dir, d.so, d.wipeOld, d.log); err != nil {
			return d.stillFaulty(err)
		}
		d.wb.db.Store(db)
	} else if err := db.Recover(ctx); err != nil {
		return d.stillFaulty(err)
	}
	// Writes go on meanwhile and add suspects: each round deletes what
	// the one before left, and resume queues the last few keys itself.
	for range 3 {
		s := d.wb.takeSuspects()
		if err := d.purge(ctx, db, s); err != nil {
			d.wb.restoreSuspects(s)
			return d.stillFaulty(err)
		}
		if d.wb.resume() {
			d.log.Info("tiered: disk tier back", "dir", d.dir)
			return nil
		}
	}
	return errors.New("tiered: disk tier: prefix invalidations keep coming while it catches up")
}

// stillFaulty records err, from a failed attempt to heal, as the tier's
// current fault if it is a disk fault, and returns it.
func (d *diskTier) stillFaulty(err error) error {
	if isDiskFault(err) {
		d.wb.setFault(asDiskFault(err))
	}
	return err
}

// purge deletes, durably, the disk copies of what s names: its keys, every
// key under its prefixes, or every key if it overflowed.
func (d *diskTier) purge(ctx context.Context, db *store.DB, s suspects) error {
	b := db.NewBatch()
	defer func() { b.Close() }()
	del := func(key string) error {
		if err := b.Delete(key); err != nil {
			return err
		}
		if b.Len() < purgeBatch {
			return nil
		}
		if err := b.Commit(ctx); err != nil {
			return err
		}
		b = db.NewBatch()
		return nil
	}
	scanDel := func(prefix string) error {
		return db.Scan(ctx, prefix, func(key string, _ store.Entry) error { return del(key) })
	}
	if s.overflow {
		d.log.Warn("tiered: too many writes missed the disk while it was off; deleting everything it holds", "dir", d.dir)
		if err := scanDel(""); err != nil {
			return err
		}
	}
	for k := range s.keys {
		if err := del(k); err != nil {
			return err
		}
	}
	for _, p := range s.prefixes {
		if err := scanDel(p); err != nil {
			return err
		}
	}
	if err := b.CommitSync(ctx); err != nil {
		return err
	}
	return db.Sync(ctx) // the batches committed before b, when b was empty
}

// storeOptions are the disk tier's store options.
func (c *Cache) storeOptions() *store.Options {
	o := c.o
	so := &store.Options{MaxBytes: o.DiskMaxBytes, Clock: c.clk, Logger: o.Logger, MaxKeyBytes: o.MaxKeyBytes, FS: o.diskFS,
		AllowSharedDir: o.AllowSharedDir}
	if !o.SyncWrites {
		so.Durability = store.NoSync
	}
	for _, r := range o.Routes {
		so.MaxValueBytes = max(so.MaxValueBytes, r.MaxValueBytes+maxEnvelopeOverhead)
	}
	return so
}

// openStore opens the disk tier's store in dir. A directory of another
// format version is wiped when wipeOld says it holds only copies of what
// Redis holds: better than refusing to start. (With a route whose only
// copy is on disk, it is an error.)
func openStore(dir string, so *store.Options, wipeOld bool, log *slog.Logger) (*store.DB, error) {
	db, err := store.Open(dir, so)
	if errors.Is(err, store.ErrIncompatible) && wipeOld {
		log.Warn("tiered: disk tier in an older format; wiping it", "dir", dir, "err", err)
		if err = store.Wipe(dir); err == nil {
			db, err = store.Open(dir, so)
		}
	}
	return db, err
}

// openDiskTier opens the disk tier. On a disk fault it opens the tier off,
// and the prober keeps trying, unless Options.DiskRequired.
func openDiskTier(c *Cache, mem *tracking.Cache) (*diskTier, error) {
	so := c.storeOptions()
	wipeOld := !localDisk(c.o.Routes)
	db, err := openStore(c.o.Dir, so, wipeOld, c.o.Logger)
	if err != nil && (!isDiskFault(err) || c.o.DiskRequired) {
		return nil, opErr("open", "", diskOpenError(c.o.Dir, err))
	}
	d := newDiskTier(db, mem, c)
	d.dir, d.so, d.wipeOld = c.o.Dir, so, wipeOld
	if err != nil {
		d.stepAside(err)
	}
	d.startProber()
	return d, nil
}

// localUnder reports whether a key starting with prefix can belong to a
// route whose disk entries are the record: one with the disk tier and
// without Redis.
func localUnder(rt *router, prefix string) bool {
	local := func(x *route) bool { return x.Tiers&Disk != 0 && x.Tiers&Redis == 0 }
	if local(rt.find(prefix)) {
		return true
	}
	for _, x := range rt.routes {
		if local(x) && strings.HasPrefix(x.Prefix, prefix) {
			return true
		}
	}
	return false
}
