package store

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"time"
)

// Entry is a stored value and its expiry.
type Entry struct {
	// Value holds the bytes exactly as they were given to Set or SetExpiry;
	// the store never interprets them. Get and Scan return a copy the caller
	// owns.
	Value []byte
	// Expiry is when the entry stops being returned (the instant itself
	// included). The zero Time means never. The store keeps it at nanosecond
	// precision, clamped to the years 1678–2262 that a Unix nanosecond count
	// can hold; it is returned in UTC.
	Expiry time.Time
}

// Clock tells the store the time, for expiry. Implementations must be safe
// for concurrent use.
type Clock interface {
	Now() time.Time
}

// wallClock is the system clock.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// EntryOverhead is the number of bytes the store adds to each entry on disk
// beyond its key and value. Options.MaxBytes and Stats.Bytes count it.
const EntryOverhead = 13

// Record layout, the stored form of every value (big-endian):
//
//	off len field
//	  0   1 recordMagic: identifies the record format (version 2)
//	  1   8 expiry, Unix nanoseconds (0: none)
//	  9   4 CRC-32C over bytes 0..8 and the value
//	 13   … value
//
// The checksum detects torn and corrupted records, which are then dropped
// and never returned.
const (
	recordMagic  byte = 0xD2
	recordHeader      = EntryOverhead
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	errShort    = errors.New("record too short")
	errMagic    = errors.New("unknown record format")
	errChecksum = errors.New("record checksum mismatch")
)

// recordSize is the encoded size of a record holding n value bytes.
func recordSize(n int) int { return recordHeader + n }

// putRecord encodes a record of value with expiry exp (Unix ns, 0: none)
// into dst, which must be recordSize(len(value)) bytes long.
func putRecord(dst, value []byte, exp int64) {
	dst[0] = recordMagic
	binary.BigEndian.PutUint64(dst[1:9], uint64(exp))
	copy(dst[recordHeader:], value)
	c := crc32.Update(0, castagnoli, dst[:9])
	c = crc32.Update(c, castagnoli, dst[recordHeader:])
	binary.BigEndian.PutUint32(dst[9:13], c)
}

// decodeRecord checks rec and returns its expiry (Unix ns, 0: none); the
// value is rec[recordHeader:]. It allocates nothing.
func decodeRecord(rec []byte) (exp int64, err error) {
	if len(rec) < recordHeader {
		return 0, errShort
	}
	if rec[0] != recordMagic {
		return 0, errMagic
	}
	c := crc32.Update(0, castagnoli, rec[:9])
	c = crc32.Update(c, castagnoli, rec[recordHeader:])
	if c != binary.BigEndian.Uint32(rec[9:13]) {
		return 0, errChecksum
	}
	return int64(binary.BigEndian.Uint64(rec[1:9])), nil
}

// expired reports whether exp (Unix ns, 0: none) is not after now.
func expired(exp, now int64) bool { return exp != 0 && now >= exp }

// expiryNanos converts an expiry to Unix nanoseconds, 0 meaning none. Times
// outside what UnixNano can hold are clamped; a non-zero time at or before
// the Unix epoch becomes 1, so it stays an expiry (in the past) rather than
// turning into "none".
func expiryNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Unix() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case t.Unix() <= 0:
		return 1
	default:
		return t.UnixNano()
	}
}

// expiryTime is the inverse of expiryNanos.
func expiryTime(exp int64) time.Time {
	if exp == 0 {
		return time.Time{}
	}
	return time.Unix(0, exp).UTC()
}
