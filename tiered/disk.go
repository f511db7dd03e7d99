package tiered

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// diskTier is the disk tier: a Pebble store (package store) written
// behind, off the caller's path, and trusted for Redis keys only while the
// memory tier's guard says nothing changed.
//
// Trust. A disk copy of a Redis key is served without asking Redis only if
// this process wrote it, filled it from Redis or revalidated it under a
// ticket that is still valid: the trust record is that ticket, so an
// invalidation, a local write or an epoch bump ends it by itself, with no
// callback and no second generation table. An untrusted copy is checked
// against Redis (or served by Options.Unverified).
//
// Write-behind. Every write, fill and delete is queued and applied in
// order, in batches (writeBehind). A fill or a write presents its ticket
// when it is queued, under the queue's lock, and is dropped if the ticket
// was overtaken. An invalidation bumps the key's generation first and
// queues the key's delete afterwards (invalidated), so a queued fill either
// came first, and the delete after it wins, or sees the bump and is
// dropped: the queue never resurrects a value older than what memory and
// Redis hold (TestRaceFillInvalidationPending).
//
// Faults. A disk fault turns the tier off until the disk heals: see
// diskfault.go.
type diskTier struct {
	mem   *tracking.Cache // the guard
	wb    *writeBehind
	trust trust
	log   *slog.Logger
	stats *cacheStats
	// cache decodes stored bytes into entries (decodeDiskInto: it holds
	// the keys and limits) and tells the time. It is called directly, not
	// through a func value, so that an entry decoded in place stays on its
	// reader's stack.
	cache *Cache
	// owns reports whether key's route has the disk tier; local whether a
	// key under prefix can be the record of a route without Redis.
	owns  func(key string) bool
	local func(prefix string) bool

	// Healing (diskfault.go): how to open the store if it never opened,
	// and the prober, which ctx stops.
	dir     string
	so      *store.Options
	wipeOld bool
	kick    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	probed  chan struct{} // closed when the prober has stopped

	// stripes order, per key, an acknowledged write's memory update and
	// its queued disk write against the deletes invalidations queue (see
	// write).
	seed    maphash.Seed
	stripes [256]sync.Mutex
}

var _ tier = (*diskTier)(nil)

// newDiskTier returns the tier over db (nil: not open yet; the caller then
// turns the tier off before publishing it).
func newDiskTier(db *store.DB, mem *tracking.Cache, c *Cache) *diskTier {
	d := &diskTier{mem: mem, log: c.o.Logger, stats: &c.stats, cache: c,
		owns:  func(key string) bool { return c.router.find(key).Tiers&Disk != 0 },
		local: func(prefix string) bool { return localUnder(c.router, prefix) },
		seed:  maphash.MakeSeed(), kick: make(chan struct{}, 1), probed: make(chan struct{})}
	d.trust.init()
	d.wb = newWriteBehind(db, mem, c.o.WriteBehind, c.o.SyncWrites, c.o.Logger, d.faulted)
	return d
}

func (*diskTier) source() Source { return SourceDisk }

// get reads key from the write-behind queue, else from the store. While the
// tier is off it misses.
func (d *diskTier) get(ctx context.Context, r *route, key string) (e entry, verified, ok bool, err error) {
	if verified, ok, err = d.load(ctx, r, key, &e); !ok || !alive(&e.it, d.cache.now()) {
		return entry{}, false, false, err // a queued copy past its expiry
	}
	return e, verified, true, nil
}

// load is get into *e, without its expiry check (the caller checks e
// against its own clock reading): the Disk-only read path (Cache.getDisk)
// decodes the entry in place through it. On a miss or an error *e is not
// to be used.
func (d *diskTier) load(ctx context.Context, r *route, key string, e *entry) (verified, ok bool, err error) {
	b, expiry, ok, err := d.read(ctx, key)
	if err != nil || !ok {
		return false, false, err
	}
	if err := d.cache.decodeDiskInto(r, key, b, expiry, e); err != nil {
		d.stats.diskCorrupt.Add(1)
		d.log.Warn("tiered: disk entry refused", "key", key, "err", err)
		d.drop(key)
		return false, false, nil
	}
	return r.Tiers&Redis == 0 || d.trust.has(d.mem, key), true, nil
}

// read returns key's bytes as the disk tier holds them, and the hard
// expiry they were stored with (Unix ns, 0: none): the latest queued op,
// else the store's entry. While the tier is off it misses; a read that
// meets a disk fault turns it off, and misses.
func (d *diskTier) read(ctx context.Context, key string) ([]byte, int64, bool, error) {
	if d.wb.fault() != nil {
		return nil, 0, false, nil
	}
	if op, ok := d.wb.lookup(key); ok {
		return op.data, op.expiry, op.data != nil, nil
	}
	d.stats.diskReads.Add(1)
	se, ok, err := d.wb.db.Load().Get(ctx, key)
	if isDiskFault(err) {
		d.stepAside(err)
		return nil, 0, false, nil
	}
	if err != nil || !ok {
		return nil, 0, false, err
	}
	return se.Value, unixNano(se.Expiry), true, nil
}

// unixNano is t in Unix ns, 0 for the zero Time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (d *diskTier) fill(r *route, key string, e entry, t tracking.Ticket) bool {
	_, ok := d.put(r, key, &e, t, false)
	return ok
}

func (d *diskTier) confirm(_ *route, key string, _ entry, t tracking.Ticket) bool {
	return d.confirmHash(d.trust.hash(key), t)
}

// confirmHash is confirm for a key whose trust hash the caller already has.
func (d *diskTier) confirmHash(h uint64, t tracking.Ticket) bool {
	if !d.mem.Valid(t) {
		return false
	}
	d.trust.addHash(h, t)
	return true
}

// put queues e under ticket t (dropped if t was overtaken) and trusts it on
// Redis routes. wait asks for a handle to wait on its commit (SyncWrites).
func (d *diskTier) put(r *route, key string, e *entry, t tracking.Ticket, wait bool) (*diskOp, bool) {
	op, ok := d.wb.put(key, e.disk, e.local().HardExpiry, &t, queueOpts{wait: wait})
	if ok && r.Tiers&Redis != 0 {
		d.trust.add(key, t)
	}
	return op, ok
}

// lock takes key's stripe lock and returns its unlock.
func (d *diskTier) lock(key string) func() {
	mu := &d.stripes[maphash.String(d.seed, key)%uint64(len(d.stripes))]
	mu.Lock()
	return mu.Unlock
}

// write queues an acknowledged write of key: e, trusted under next, or a
// delete when e is nil or the write was overtaken (valid false: another
// write may be newer, and the disk must not keep an older copy). It
// returns what the caller must wait for: with syncWrites the commit; on a
// route without Redis, whose disk entries are the record, a delete's
// durable commit always (an acknowledged delete is never undone, even by a
// crash). If the tier is off, a write the disk is the record of (such a
// delete, or a Set with syncWrites) fails with its fault, and a failed Set
// is taken back from memory: it is not acknowledged, so it is not served.
//
// REQUIRES: key's stripe lock (lock), held since before the memory tier's
// write that returned next and valid. The race it closes, in order:
//  1. a Set's memory write succeeds (no invalidation yet);
//  2. another client's write of the key is invalidated: the generation is
//     bumped, the memory entry removed, and the disk delete queued;
//  3. the Set queues its value to disk, after the delete.
//
// The delete of step 2 takes the stripe lock (invalidated), so it comes
// either before step 1 (then the memory write saw the bump, valid is false,
// and a delete is queued) or after step 3 (then it wins). Holding the lock
// makes the write's own enqueue unconditional: a ticket check there would
// also refuse it for a write of another key sharing its generation slot,
// and lose an acknowledged write from the disk.
func (d *diskTier) write(r *route, key string, e *entry, next tracking.Ticket, valid, syncWrites bool) diskWrite {
	record := r.Tiers&Redis == 0
	set := e != nil && valid
	qo := queueOpts{wait: syncWrites, sync: record && !set}
	qo.wait = qo.wait || qo.sync
	var op *diskOp
	var ok bool
	if set {
		op, ok = d.wb.put(key, e.disk, e.local().HardExpiry, nil, qo)
		if ok && !record {
			d.trust.add(key, next)
		}
	} else {
		d.trust.forget(key)
		op, ok = d.wb.put(key, nil, 0, nil, qo)
	}
	switch {
	case !qo.wait:
		return diskWrite{}
	case ok:
		return diskWrite{d: d, op: op, key: key, next: next, undo: record && set, copy: !record}
	}
	fault := d.wb.fault()
	switch {
	case fault == nil:
		return diskWrite{err: ErrClosed}
	case !record:
		return diskWrite{} // a copy of Redis: its disk copy is a suspect now
	case set:
		d.unwriteLocked(key, next)
	}
	return diskWrite{err: fault}
}

// drop removes key's copy.
func (d *diskTier) drop(key string) {
	d.trust.forget(key)
	d.wb.put(key, nil, 0, nil, queueOpts{})
}

// invalidated is the memory tier's invalidation listener: it runs on the
// tracking connection's reader after the generations were bumped, so the
// deletes it queues come after any fill that passed its ticket check. It
// never blocks.
func (d *diskTier) invalidated(keys []string, epochBump bool) {
	if epochBump {
		d.trust.reset() // every ticket is stale anyway; free the records
		return
	}
	for _, k := range keys {
		if d.owns(k) {
			unlock := d.lock(k)
			d.drop(k)
			unlock()
		}
	}
}

// close stops the prober, flushes the queue and closes the store. It
// returns the tier's fault if it is off, else the last write error not
// reported yet and the store's own (a disk fault wrapped in ErrDisk).
func (d *diskTier) close() error {
	d.stopProber()
	werr := d.wb.close()
	fault := d.wb.fault()
	var cerr error
	if db := d.wb.db.Load(); db != nil {
		cerr = db.Close()
	}
	switch {
	case fault != nil:
		if cerr != nil {
			d.log.Debug("tiered: disk tier closed while off", "err", cerr)
		}
		return fault
	case isDiskFault(cerr):
		cerr = asDiskFault(cerr)
	}
	return errors.Join(werr, cerr)
}

// trust records, per key hash, the ticket under which the disk copy was
// last known to match Redis. It keeps 8 bytes of hash and a ticket per key.
type trust struct {
	seed maphash.Seed
	mu   sync.Mutex
	m    map[uint64]tracking.Ticket
}

func (t *trust) init() {
	t.seed = maphash.MakeSeed()
	t.m = make(map[uint64]tracking.Ticket)
}

// reserve makes room for n records while there are none (before a warm
// start's first pass), so the map does not grow record by record.
func (t *trust) reserve(n int) {
	t.mu.Lock()
	if len(t.m) == 0 {
		t.m = make(map[uint64]tracking.Ticket, n)
	}
	t.mu.Unlock()
}

// hash is key's record: the records are keyed by it.
func (t *trust) hash(key string) uint64 { return maphash.String(t.seed, key) }

func (t *trust) add(key string, tk tracking.Ticket) { t.addHash(t.hash(key), tk) }

func (t *trust) addHash(h uint64, tk tracking.Ticket) {
	t.mu.Lock()
	t.m[h] = tk
	t.mu.Unlock()
}

func (t *trust) has(mem *tracking.Cache, key string) bool { return t.hasHash(mem, t.hash(key)) }

func (t *trust) hasHash(mem *tracking.Cache, h uint64) bool {
	t.mu.Lock()
	tk, ok := t.m[h]
	t.mu.Unlock()
	return ok && mem.Valid(tk)
}

func (t *trust) forget(key string) {
	h := t.hash(key)
	t.mu.Lock()
	delete(t.m, h)
	t.mu.Unlock()
}

func (t *trust) reset() {
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}

// scan calls fn with every stored key under prefix, its bytes and their
// hard expiry. While the tier is off there is none; a scan that meets a
// disk fault turns it off and ends early, without an error.
func (d *diskTier) scan(ctx context.Context, prefix string, fn func(key string, b []byte, expiry int64) error) error {
	return d.guardScan(func(db *store.DB) error {
		return db.Scan(ctx, prefix, func(key string, se store.Entry) error {
			return fn(key, se.Value, unixNano(se.Expiry))
		})
	})
}

// scanView is scan without copies (store.DB.ScanView): key and b are
// valid only until fn returns.
func (d *diskTier) scanView(ctx context.Context, prefix string, fn func(key []byte, b []byte, expiry int64) error) error {
	return d.guardScan(func(db *store.DB) error {
		return db.ScanView(ctx, prefix, func(key []byte, se store.Entry) error {
			return fn(key, se.Value, unixNano(se.Expiry))
		})
	})
}

// guardScan runs a scan of the store under the tier's fault rules (see scan).
func (d *diskTier) guardScan(run func(db *store.DB) error) error {
	if d.wb.fault() != nil {
		return nil
	}
	d.stats.diskReads.Add(1)
	err := run(d.wb.db.Load())
	if isDiskFault(err) {
		d.stepAside(err)
		return nil
	}
	return err
}

// estimate is about how many entries the store holds (see
// store.DB.EstimateEntries), 0 if that is unknown or the tier is off.
func (d *diskTier) estimate() int {
	if d.wb.fault() != nil {
		return 0
	}
	n, err := d.wb.db.Load().EstimateEntries()
	if err != nil {
		return 0
	}
	return int(n)
}

// dropPrefix removes every key under prefix: queued and stored. Where a key
// under prefix can be the record of a route without Redis, the deletes are
// durable when it returns, and it fails with the tier's fault while the
// tier is off; otherwise the prefix is remembered then, and its disk copies
// deleted before the tier comes back.
func (d *diskTier) dropPrefix(ctx context.Context, prefix string) error {
	if d.wb.offPrefix(prefix) {
		if d.local(prefix) {
			return d.wb.fault()
		}
		return nil
	}
	var keys []string
	d.wb.mu.Lock()
	for k := range d.wb.mu.pending {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	d.wb.mu.Unlock()
	for _, k := range keys {
		d.drop(k)
	}
	err := d.wb.db.Load().Scan(ctx, prefix, func(key string, _ store.Entry) error {
		d.drop(key)
		return nil
	})
	if isDiskFault(err) {
		d.stepAside(err)
		d.wb.offPrefix(prefix)
	}
	if err != nil || !d.local(prefix) {
		return d.offErr(err)
	}
	return d.wb.barrier(ctx)
}

// offErr is err, or the tier's fault if err is a disk fault (which turned
// it off).
func (d *diskTier) offErr(err error) error {
	if isDiskFault(err) {
		if f := d.wb.fault(); f != nil {
			return f
		}
		return asDiskFault(err)
	}
	return err
}

// maxEnvelopeOverhead is the most an envelope adds to a value: the disk
// tier's entries may be that much larger than the route's MaxValueBytes.
const maxEnvelopeOverhead = envelope.HeaderSize + envelope.SigSize
