package tiered

import (
	"context"
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
type diskTier struct {
	db    *store.DB
	mem   *tracking.Cache // the guard
	wb    *writeBehind
	trust trust
	log   *slog.Logger
	stats *cacheStats
	// decode turns stored bytes into an entry, verifying signatures: the
	// Cache's decodeDisk, which holds the keys and limits.
	decode func(r *route, key string, b []byte, expiry int64) (entry, error)
	// owns reports whether key's route has the disk tier.
	owns func(key string) bool
	now  func() int64 // the cache's clock, Unix ns

	// stripes order, per key, an acknowledged write's memory update and
	// its queued disk write against the deletes invalidations queue (see
	// write).
	seed    maphash.Seed
	stripes [256]sync.Mutex
}

var _ tier = (*diskTier)(nil)

func newDiskTier(db *store.DB, mem *tracking.Cache, c *Cache) *diskTier {
	d := &diskTier{db: db, mem: mem, log: c.o.Logger, stats: &c.stats, decode: c.decodeDisk,
		owns: func(key string) bool { return c.router.find(key).Tiers&Disk != 0 }, now: c.now, seed: maphash.MakeSeed()}
	d.trust.init()
	d.wb = newWriteBehind(db, mem, c.o.WriteBehind, c.o.Logger)
	return d
}

func (*diskTier) source() Source { return SourceDisk }

// get reads key from the write-behind queue, else from the store.
func (d *diskTier) get(ctx context.Context, r *route, key string) (entry, bool, bool, error) {
	b, expiry, ok, err := d.read(ctx, key)
	if err != nil || !ok {
		return entry{}, false, false, err
	}
	e, err := d.decode(r, key, b, expiry)
	if err != nil {
		d.stats.diskCorrupt.Add(1)
		d.log.Warn("tiered: disk entry refused", "key", key, "err", err)
		d.drop(key)
		return entry{}, false, false, nil
	}
	if !alive(&e.it, d.now()) {
		return entry{}, false, false, nil // a queued copy past its expiry
	}
	return e, r.Tiers&Redis == 0 || d.trust.has(d.mem, key), true, nil
}

// read returns key's bytes as the disk tier holds them, and the hard
// expiry they were stored with (Unix ns, 0: none): the latest queued op,
// else the store's entry.
func (d *diskTier) read(ctx context.Context, key string) ([]byte, int64, bool, error) {
	if op, ok := d.wb.lookup(key); ok {
		return op.data, op.expiry, op.data != nil, nil
	}
	d.stats.diskReads.Add(1)
	se, ok, err := d.db.Get(ctx, key)
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

func (d *diskTier) fill(r *route, key string, e *entry, t tracking.Ticket) bool {
	_, ok := d.put(r, key, e, t, false)
	return ok
}

func (d *diskTier) confirm(_ *route, key string, _ *entry, t tracking.Ticket) bool {
	if !d.mem.Valid(t) {
		return false
	}
	d.trust.add(key, t)
	return true
}

// put queues e under ticket t (dropped if t was overtaken) and trusts it on
// Redis routes. wait asks for a handle to wait on its commit (SyncWrites).
func (d *diskTier) put(r *route, key string, e *entry, t tracking.Ticket, wait bool) (*diskOp, bool) {
	it := e.local()
	op, ok := d.wb.put(key, e.disk, it.HardExpiry, &t, wait)
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
// write may be newer, and the disk must not keep an older copy).
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
func (d *diskTier) write(r *route, key string, e *entry, next tracking.Ticket, valid, wait bool) *diskOp {
	if e != nil && valid {
		it := e.local()
		op, _ := d.wb.put(key, e.disk, it.HardExpiry, nil, wait)
		if r.Tiers&Redis != 0 {
			d.trust.add(key, next)
		}
		return op
	}
	d.trust.forget(key)
	op, _ := d.wb.put(key, nil, 0, nil, wait)
	return op
}

// drop removes key's copy.
func (d *diskTier) drop(key string) {
	d.trust.forget(key)
	d.wb.put(key, nil, 0, nil, false)
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

func (d *diskTier) close() error {
	d.wb.close()
	return d.db.Close()
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

func (t *trust) add(key string, tk tracking.Ticket) {
	h := maphash.String(t.seed, key)
	t.mu.Lock()
	t.m[h] = tk
	t.mu.Unlock()
}

func (t *trust) has(mem *tracking.Cache, key string) bool {
	h := maphash.String(t.seed, key)
	t.mu.Lock()
	tk, ok := t.m[h]
	t.mu.Unlock()
	return ok && mem.Valid(tk)
}

func (t *trust) forget(key string) {
	h := maphash.String(t.seed, key)
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
// hard expiry.
func (d *diskTier) scan(ctx context.Context, prefix string, fn func(key string, b []byte, expiry int64) error) error {
	d.stats.diskReads.Add(1)
	return d.db.Scan(ctx, prefix, func(key string, se store.Entry) error {
		return fn(key, se.Value, unixNano(se.Expiry))
	})
}

// dropPrefix removes every key under prefix: queued and stored.
func (d *diskTier) dropPrefix(ctx context.Context, prefix string) error {
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
	return d.scan(ctx, prefix, func(key string, _ []byte, _ int64) error {
		d.drop(key)
		return nil
	})
}

// maxEnvelopeOverhead is the most an envelope adds to a value: the disk
// tier's entries may be that much larger than the route's MaxValueBytes.
const maxEnvelopeOverhead = envelope.HeaderSize + envelope.SigSize
