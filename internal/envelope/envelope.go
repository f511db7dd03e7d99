// Package envelope is the binary format thermos wraps around every value it
// stores in Redis and in Pebble.
//
// Layout (big-endian), HeaderSize bytes before the payload, plus SigSize when
// the value is signed:
//
//	off len field
//	  0   1 magic/version (Magic)
//	  1   1 flags (FlagSigned, FlagCompressed, FlagNegative)
//	  2   8 soft expiry, Unix nanoseconds (0: none): refresh after this
//	 10   8 hard expiry, Unix nanoseconds (0: none): never serve after this
//	 18   8 delta: duration of the last rebuild in nanoseconds (XFetch's δ)
//	 26   8 write version: identifies one write, compared on revalidation
//	 34   4 CRC-32C over every other byte of the envelope, payload included
//	 38  33 only with FlagSigned: key id (1) and HMAC-SHA256 tag (32)
//	      … payload
//
// The checksum detects torn and corrupted entries; the optional HMAC tag,
// computed over the data key, the header and the payload, detects values not
// written by a holder of the secret. Decode checks the checksum only; call
// Verify before trusting a signed value's payload.
package envelope

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Magic is the first byte of every envelope: a format marker whose low nibble
// is the format version (1).
const Magic byte = 0xE1

const (
	// VersionOffset and VersionSize locate the write version, for scripts
	// that compare it server-side without shipping the value.
	VersionOffset = 26
	VersionSize   = 8

	// HeaderSize is the size of an unsigned envelope's header.
	HeaderSize = 38
	// SigSize is the extra size of a signed envelope's header: key id and tag.
	SigSize = 1 + sha256.Size
)

// Flags describe an envelope's payload.
type Flags uint8

const (
	// FlagSigned marks an envelope that carries a key id and HMAC-SHA256 tag.
	FlagSigned Flags = 1 << iota
	// FlagCompressed marks a payload that the codec layer compressed.
	FlagCompressed
	// FlagNegative marks a cached "not found" from the origin; its payload is empty.
	FlagNegative

	knownFlags = FlagSigned | FlagCompressed | FlagNegative
)

// Errors returned by Decode and Verify. Every corruption error matches
// ErrCorrupt with errors.Is.
var (
	ErrCorrupt  = errors.New("envelope: corrupt")
	ErrShort    = fmt.Errorf("%w: too short", ErrCorrupt)
	ErrMagic    = fmt.Errorf("%w: unknown magic or version", ErrCorrupt)
	ErrFlags    = fmt.Errorf("%w: unknown flags", ErrCorrupt)
	ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrCorrupt)

	// ErrUnsigned is returned by Verify for an envelope without a tag.
	ErrUnsigned = errors.New("envelope: not signed")
	// ErrUnknownKey is returned by Verify when no secret has the envelope's key id.
	ErrUnknownKey = errors.New("envelope: unknown signing key id")
	// ErrSignature is returned by Verify when the tag does not match.
	ErrSignature = errors.New("envelope: signature mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is an envelope without its payload. It is a plain value: decoding
// one allocates nothing.
type Header struct {
	Flags      Flags
	SoftExpiry int64 // Unix nanoseconds; 0 means none
	HardExpiry int64 // Unix nanoseconds; 0 means none
	Delta      time.Duration
	Version    uint64
	KeyID      byte              // only with FlagSigned
	Tag        [sha256.Size]byte // only with FlagSigned
}

// Size returns the encoded size of the header.
func (h *Header) Size() int {
	if h.Flags&FlagSigned != 0 {
		return HeaderSize + SigSize
	}
	return HeaderSize
}

// Expired reports whether the hard expiry is set and not after now (Unix ns).
func (h *Header) Expired(now int64) bool { return h.HardExpiry != 0 && now >= h.HardExpiry }

// Entry is a decoded envelope. Payload aliases the bytes it was decoded from.
type Entry struct {
	Header
	Payload []byte
}

// Equal reports whether e and o encode to the same bytes.
func (e *Entry) Equal(o *Entry) bool {
	return e.Header == o.Header && string(e.Payload) == string(o.Payload)
}

// Append encodes e, computing its checksum, and appends it to dst.
func (e *Entry) Append(dst []byte) []byte {
	start := len(dst)
	dst = e.Header.appendFields(dst)
	dst = append(dst, e.Payload...)
	b := dst[start:]
	binary.BigEndian.PutUint32(b[34:38], checksum(b))
	return dst
}

// Size returns the encoded size of e.
func (e *Entry) Size() int { return e.Header.Size() + len(e.Payload) }

func (h *Header) appendFields(dst []byte) []byte {
	dst = append(dst, Magic, byte(h.Flags))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.SoftExpiry))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.HardExpiry))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Delta))
	dst = binary.BigEndian.AppendUint64(dst, h.Version)
	dst = append(dst, 0, 0, 0, 0) // checksum, filled by the caller
	if h.Flags&FlagSigned != 0 {
		dst = append(dst, h.KeyID)
		dst = append(dst, h.Tag[:]...)
	}
	return dst
}

// checksum is the CRC-32C of b with its checksum field skipped.
func checksum(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:34])
	return crc32.Update(c, castagnoli, b[38:])
}

// DecodeHeader parses and checks the header of b, verifying the checksum
// over the whole envelope. It allocates nothing. The payload starts at
// h.Size().
func DecodeHeader(b []byte) (h Header, err error) {
	if err := h.decode(b); err != nil {
		return Header{}, err
	}
	return h, nil
}

// decode is DecodeHeader into h, whose fields it sets one by one: on
// success every field of h is b's (Tag is zero when b is unsigned); on an
// error h is left as it was.
func (h *Header) decode(b []byte) error {
	if len(b) < HeaderSize {
		return ErrShort
	}
	if b[0] != Magic {
		return ErrMagic
	}
	flags := Flags(b[1])
	if flags&^knownFlags != 0 {
		return ErrFlags
	}
	if flags&FlagSigned != 0 && len(b) < HeaderSize+SigSize {
		return ErrShort
	}
	if binary.BigEndian.Uint32(b[34:38]) != checksum(b) {
		return ErrChecksum
	}
	h.Flags = flags
	h.SoftExpiry = int64(binary.BigEndian.Uint64(b[2:10]))
	h.HardExpiry = int64(binary.BigEndian.Uint64(b[10:18]))
	h.Delta = time.Duration(binary.BigEndian.Uint64(b[18:26]))
	h.Version = binary.BigEndian.Uint64(b[VersionOffset : VersionOffset+VersionSize])
	if flags&FlagSigned != 0 {
		h.KeyID = b[HeaderSize]
		copy(h.Tag[:], b[HeaderSize+1:HeaderSize+SigSize])
	} else {
		h.KeyID, h.Tag = 0, [sha256.Size]byte{}
	}
	return nil
}

// Decode parses b. The returned Payload aliases b. It returns an error
// matching ErrCorrupt when b is not a whole, intact envelope.
func Decode(b []byte) (Entry, error) {
	var e Entry
	if err := DecodeInto(b, &e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// DecodeInto is Decode into *e, for a caller that keeps the entry where it
// is: it writes e's fields in place instead of returning a copy of the
// whole entry, which a hot read path would copy again. On an error it
// returns what Decode returns and leaves *e as it was.
func DecodeInto(b []byte, e *Entry) error {
	if err := e.Header.decode(b); err != nil {
		return err
	}
	e.Payload = b[e.Header.Size():]
	return nil
}

// Keyring holds HMAC secrets by key id. New values are signed with Current;
// values signed with any id present in Secrets verify, so keys can be rotated
// without a flush. A Keyring must not be modified while in use.
type Keyring struct {
	Current byte
	Secrets map[byte][]byte
}

// Sign sets FlagSigned and the tag of e, binding it to the data key. Call it
// after every other field of e is final.
func (e *Entry) Sign(key string, ring *Keyring) error {
	secret, ok := ring.Secrets[ring.Current]
	if !ok || len(secret) == 0 {
		return fmt.Errorf("%w %d", ErrUnknownKey, ring.Current)
	}
	e.Flags |= FlagSigned
	e.KeyID = ring.Current
	e.Tag = tag(secret, key, &e.Header, e.Payload)
	return nil
}

// Verify checks e's tag against the secret its key id names, for the data key
// it is read under. A value copied from another key does not verify.
func (e *Entry) Verify(key string, ring *Keyring) error {
	if e.Flags&FlagSigned == 0 {
		return ErrUnsigned
	}
	secret, ok := ring.Secrets[e.KeyID]
	if !ok || len(secret) == 0 {
		return fmt.Errorf("%w %d", ErrUnknownKey, e.KeyID)
	}
	want := tag(secret, key, &e.Header, e.Payload)
	if !hmac.Equal(want[:], e.Tag[:]) {
		return ErrSignature
	}
	return nil
}

// tag is HMAC-SHA256 over the key's length and bytes, the header fields
// (without checksum and tag) and the payload.
func tag(secret []byte, key string, h *Header, payload []byte) (out [sha256.Size]byte) {
	m := hmac.New(sha256.New, secret)
	var buf [HeaderSize + 8]byte
	b := binary.BigEndian.AppendUint64(buf[:0], uint64(len(key)))
	m.Write(b)
	m.Write([]byte(key))
	hs := *h
	hs.Tag = [sha256.Size]byte{}
	b = hs.appendFields(buf[:0])
	m.Write(b[:HeaderSize]) // checksum bytes are zero here
	m.Write([]byte{hs.KeyID})
	m.Write(payload)
	m.Sum(out[:0])
	return out
}
