package tiered

import (
	"crypto/sha1"
	"encoding/binary"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/tracking"
)

// encode builds key's entry for value (or a negative entry), with ttl (zero:
// the route's TTL, jittered). It returns the bytes for Redis, the entry for
// the local tiers and the Redis expiry (TTL plus MaxStale).
func (c *Cache) encode(r *route, key string, value []byte, ttl, delta time.Duration, negative bool) ([]byte, entry, time.Duration, error) {
	if len(value) > r.MaxValueBytes {
		return nil, entry{}, 0, newFault(ErrValueTooLarge, nil, "%d bytes > %d", len(value), r.MaxValueBytes)
	}
	if ttl == 0 {
		ttl = r.TTL
		if r.Jitter > 0 {
			ttl -= time.Duration(float64(ttl) * r.Jitter * c.float64())
		}
	}
	now := c.now()
	hard := ttl + r.MaxStale
	if negative {
		hard = ttl
	}
	if r.Raw {
		it := tracking.Item{Value: value, SoftExpiry: now + int64(ttl), HardExpiry: now + int64(hard), Version: digest(value), Tag: r.idx}
		return value, entry{it: it, disk: rawDisk(&it)}, hard, nil
	}
	e := envelope.Entry{Header: envelope.Header{
		SoftExpiry: now + int64(ttl),
		HardExpiry: now + int64(hard),
		Delta:      delta,
		Version:    c.writeVersion(),
	}, Payload: value}
	if negative {
		e.Flags |= envelope.FlagNegative
		e.Payload = nil
	}
	if c.ring != nil {
		if err := e.Sign(key, c.ring); err != nil {
			return nil, entry{}, 0, err
		}
		c.rollbackSee(r, key, e.Version)
	}
	enc := e.Append(make([]byte, 0, e.Size()))
	it := itemOf(r, &e)
	it.Value = enc[e.Header.Size():]
	return enc, entry{it: it, disk: enc}, hard, nil
}

// decodeRemote decodes bytes read from Redis together with the key's
// remaining TTL there (pttl < 0: none), read by a command sent at sent
// (Unix ns, by the cache's clock). Redis's own expiry caps the local copies
// (entry.until) — counted from when the read was sent, so from no later
// than Redis counted it — and a copy never outlives its key; the value
// itself is what Redis held when it answered, and is served as such. A
// value that fails its checksum or signature is refused as a miss, counted
// (ok false); one over the route's limit is refused with ErrValueTooLarge.
func (c *Cache) decodeRemote(r *route, key string, raw []byte, pttl time.Duration, sent int64) (entry, bool, error) {
	now := c.now()
	if r.Raw {
		if len(raw) > r.MaxValueBytes {
			return entry{}, false, newFault(ErrValueTooLarge, nil, "%d bytes in redis > %d", len(raw), r.MaxValueBytes)
		}
		exp := now + int64(r.TTL)
		it := tracking.Item{Value: raw, SoftExpiry: exp, HardExpiry: exp, Version: digest(raw), Tag: r.idx}
		return entry{it: it, disk: rawDisk(&it), until: capLimit(sent, pttl)}, true, nil
	}
	e, err := envelope.Decode(raw)
	if err != nil {
		r.stats.integrityFailures.Add(1)
		c.o.Logger.Warn("tiered: undecodable value in redis", "key", key, "err", err)
		return entry{}, false, nil
	}
	if c.ring != nil {
		if err := e.Verify(key, c.ring); err != nil {
			r.stats.integrityFailures.Add(1)
			c.o.Logger.Warn("tiered: value in redis failed verification", "key", key, "err", err)
			return entry{}, false, nil
		}
		if !c.rollbackAccept(r, key, e.Version) {
			r.stats.integrityFailures.Add(1)
			c.o.Logger.Warn("tiered: value in redis refused", "key", key, "err", errRollback)
			return entry{}, false, nil
		}
	}
	if len(e.Payload) > r.MaxValueBytes {
		return entry{}, false, newFault(ErrValueTooLarge, nil, "%d bytes in redis > %d", len(e.Payload), r.MaxValueBytes)
	}
	return entry{it: itemOf(r, &e), disk: raw, until: capLimit(sent, pttl)}, true, nil
}

// flagCapped marks, in memory only, an item whose expiry capExpiry
// shortened: its fields no longer rebuild the bytes Redis holds.
const flagCapped = 1 << 7

// capLimit is when a local copy must expire for a key with pttl left in
// Redis (pttl < 0: none, 0 returned), read by a command sent at sent.
func capLimit(sent int64, pttl time.Duration) int64 {
	if pttl < 0 {
		return 0
	}
	// PTTL rounds the clock down to the millisecond, so it may overstate
	// what is left by up to one.
	return sent + int64(pttl) - int64(time.Millisecond)
}

// local is the item a local tier keeps for e: capped by e.until.
func (e *entry) local() tracking.Item {
	it := e.it
	if e.until != 0 {
		capAt(&it, e.until)
	}
	return it
}

// capAt shortens it's expiries to limit (Unix ns).
func capAt(it *tracking.Item, limit int64) {
	if it.HardExpiry == 0 || it.HardExpiry > limit {
		it.HardExpiry = limit
		it.Flags |= flagCapped
	}
	if it.SoftExpiry == 0 || it.SoftExpiry > it.HardExpiry {
		it.SoftExpiry = it.HardExpiry
	}
}

// ttlSlack is how much later than its key's remaining TTL in Redis a local
// copy may expire before revalidation drops it. Both are read off clocks
// that drift apart by the coarse clock's lag and PTTL's rounding; a TTL
// someone shortened (PEXPIRE while this process was disconnected) is
// usually far shorter. (A connected cache hears of a PEXPIRE as an
// invalidation.)
const ttlSlack = time.Second

// decodeLocal decodes bytes this process encoded itself (a loaded value
// handed back by the herd).
func (c *Cache) decodeLocal(r *route, b []byte) (entry, error) {
	if r.Raw {
		now := c.now()
		it := tracking.Item{Value: b, SoftExpiry: now + int64(r.TTL), HardExpiry: now + int64(r.TTL), Version: digest(b), Tag: r.idx}
		return entry{it: it, disk: rawDisk(&it)}, nil
	}
	e, err := envelope.Decode(b)
	if err != nil {
		return entry{}, newFault(ErrDecode, err, "")
	}
	return entry{it: itemOf(r, &e), disk: b}, nil
}

// decodeDisk decodes what the disk tier stored for key, verifying its
// signature on signed routes: the disk is no more trusted than Redis.
// expiry is the hard expiry it was stored with (Unix ns, 0: none), which
// may be shorter than the envelope's (Redis's TTL capped it).
func (c *Cache) decodeDisk(r *route, key string, b []byte, expiry int64) (e entry, err error) {
	err = c.decodeDiskInto(r, key, b, expiry, &e)
	return e, err
}

// decodeDiskInto is decodeDisk into *out, for the disk read path: the
// envelope is decoded in place, field by field, with no copy of a whole
// entry or header passed back. On an error *out is left as it was.
// Same checks as decodeDisk: the envelope's checksum always, its
// signature on signed routes, the route's value limit.
func (c *Cache) decodeDiskInto(r *route, key string, b []byte, expiry int64, out *entry) error {
	var e envelope.Entry
	if err := envelope.DecodeInto(b, &e); err != nil {
		return err
	}
	if c.ring != nil && !r.Raw {
		if err := e.Verify(key, c.ring); err != nil {
			return err
		}
		if !c.rollbackAccept(r, key, e.Version) {
			return errRollback
		}
	}
	if len(e.Payload) > r.MaxValueBytes {
		return newFault(ErrValueTooLarge, nil, "%d bytes on disk > %d", len(e.Payload), r.MaxValueBytes)
	}
	setItem(&out.it, r, &e)
	if expiry != 0 {
		capAt(&out.it, expiry)
	}
	out.disk, out.until = b, 0
	return nil
}

func itemOf(r *route, e *envelope.Entry) (it tracking.Item) {
	setItem(&it, r, e)
	return it
}

// setItem sets every field of *it from r's envelope e, in place: the disk
// read path keeps its entry where it is (decodeDiskInto).
//
// Field by field, not *it = tracking.Item{...}: the compiler builds such a
// literal in a temporary and copies it over in 16-byte moves, which stall
// on the 8- and 1-byte stores that just filled the temporary (about a
// third of decodeDiskInto's time in perf).
func setItem(it *tracking.Item, r *route, e *envelope.Entry) {
	it.Value = e.Payload
	it.SoftExpiry = e.SoftExpiry
	it.HardExpiry = e.HardExpiry
	it.Delta = e.Delta
	it.Version = e.Version
	if r.Raw {
		it.Version = digest(e.Payload)
	}
	it.Flags = uint8(e.Flags &^ envelope.FlagSigned)
	it.Tag = r.idx
}

// rawDisk is the local envelope the disk tier keeps for a raw value: raw
// routes are never signed, and Redis holds no envelope to copy.
func rawDisk(it *tracking.Item) []byte {
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: it.SoftExpiry, HardExpiry: it.HardExpiry, Version: it.Version}, Payload: it.Value}
	return e.Append(make([]byte, 0, e.Size()))
}

// remoteBytes rebuilds what Redis holds for an unsigned item, for the
// herd's compare-before-refresh (the envelope encodes deterministically);
// nil for a signed one, whose tag memory does not keep.
func (c *Cache) remoteBytes(r *route, it *tracking.Item) []byte {
	switch {
	case r.Raw:
		return it.Value
	case c.ring != nil, it.Flags&flagCapped != 0:
		return nil
	}
	e := envelope.Entry{Header: envelope.Header{Flags: envelope.Flags(it.Flags), SoftExpiry: it.SoftExpiry, HardExpiry: it.HardExpiry, Delta: it.Delta, Version: it.Version}, Payload: it.Value}
	return e.Append(nil)
}

// digest identifies a raw value: the first 8 bytes of its SHA-1, which the
// revalidation script computes server-side with redis.sha1hex.
func digest(b []byte) uint64 {
	s := sha1.Sum(b)
	return binary.BigEndian.Uint64(s[:8])
}
