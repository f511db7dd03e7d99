package tiered

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/s2"
)

// Codec turns typed values into bytes and back. Unmarshal must not keep b.
type Codec[T any] interface {
	Marshal(v T) ([]byte, error)
	Unmarshal(b []byte, v *T) error
}

// JSON is the default Codec: encoding/json.
type JSON[T any] struct{}

// Marshal encodes v as JSON.
func (JSON[T]) Marshal(v T) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON into v.
func (JSON[T]) Unmarshal(b []byte, v *T) error { return json.Unmarshal(b, v) }

// Limits a CBOR decoder applies to what it reads, so a hostile value cannot
// make it allocate without bound.
const (
	cborMaxNesting  = 32
	cborMaxElements = 1 << 16
)

// CBOR is a compact binary Codec (RFC 8949) that decodes with limits on
// nesting and element counts. Make one with NewCBOR.
type CBOR[T any] struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

// NewCBOR returns a CBOR codec.
func NewCBOR[T any]() (*CBOR[T], error) {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return nil, err
	}
	dec, err := cbor.DecOptions{
		MaxNestedLevels:  cborMaxNesting,
		MaxArrayElements: cborMaxElements,
		MaxMapPairs:      cborMaxElements,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		return nil, err
	}
	return &CBOR[T]{enc: enc, dec: dec}, nil
}

// Marshal encodes v as deterministic CBOR.
func (c *CBOR[T]) Marshal(v T) ([]byte, error) { return c.enc.Marshal(v) }

// Unmarshal decodes CBOR into v, within the decoder's limits.
func (c *CBOR[T]) Unmarshal(b []byte, v *T) error { return c.dec.Unmarshal(b, v) }

// Framing of a typed payload: one byte saying how the rest is stored. Any
// other first byte means no framing: the codec's bytes as Cache.Set
// stored them (JSON never starts with 0x00 or 0x01).
const (
	framePlain byte = 0
	frameS2    byte = 1 // S2 block; its header carries the decoded size
)

var (
	errFrame      = errors.New("unknown payload framing")
	errDecodedCap = errors.New("decoded size over the cap")
	errS2Corrupt  = errors.New("corrupt s2 block")
)

// frame wraps b, compressing it when it is at least compressAbove bytes long
// (never when compressAbove <= 0) and compression saves space.
func frame(b []byte, compressAbove int) []byte {
	if compressAbove > 0 && len(b) >= compressAbove {
		out := make([]byte, 1+s2.MaxEncodedLen(len(b)))
		out[0] = frameS2
		enc := s2.Encode(out[1:], b)
		if len(enc) < len(b) {
			return out[:1+len(enc)]
		}
	}
	return append([]byte{framePlain}, b...)
}

// maxValueBytes returns the MaxValueBytes of key's route.
func (c *Cache) maxValueBytes(key string) int { return c.router.find(key).MaxValueBytes }

// unframe returns the payload of a framed value. A compressed one is sized
// first, by walking its tags without writing anything (s2BlockLen), and
// refused when it would decode to more than maxDecoded bytes; only then is
// exactly the decoded size allocated, once.
//
// Why not trust the header, or bound it by the compressed length: the
// header is the sender's claim (7 bytes claiming 64 MiB made every read
// allocate 64 MiB), and S2's repeat codes make ratios of millions to one
// legitimate (16 MiB of zeros encode to 13 bytes), so no ratio bounds a
// valid block. The walk is exact: it accepts a block if and only if
// s2.Decode would, and finds the size s2.Decode would produce.
func unframe(b []byte, maxDecoded int) ([]byte, error) {
	if len(b) == 0 {
		return nil, errFrame
	}
	switch b[0] {
	case framePlain:
		return b[1:], nil
	case frameS2:
		n, err := s2BlockLen(b[1:], maxDecoded)
		if err != nil {
			return nil, err
		}
		return s2.Decode(make([]byte, n), b[1:])
	default:
		return b, nil // unframed: written by Cache.Set
	}
}

// s2BlockLen returns the size block (an S2 block: a varint decoded length,
// then tags) decodes to, without decoding it. It fails with errDecodedCap,
// before reading any tag, when the stated size is over limit, and with
// errS2Corrupt for a block s2.Decode would refuse: tags running past the
// input, a copy reaching before the start of the output, or a total that
// differs from the stated size. It allocates nothing and reads each byte
// of block at most once.
//
// The tag formats are the Snappy ones plus S2's repeat code (a copy-1 tag
// with offset 0 repeats the last offset, with a longer length); this walk
// follows klauspost/compress/s2's decoder (decode_other.go) case by case,
// and FuzzUnframe checks the two agree.
func s2BlockLen(block []byte, limit int) (int, error) {
	stated, hdr := binary.Uvarint(block)
	if hdr <= 0 || stated > math.MaxUint32 {
		return 0, errS2Corrupt
	}
	if stated > uint64(max(limit, 0)) {
		return 0, fmt.Errorf("%w: %d > %d", errDecodedCap, stated, limit)
	}
	want := int(stated)
	src := block[hdr:]
	// need reports whether n more bytes are there after s.
	need := func(s, n int) bool { return n <= len(src)-s }
	d, s, offset := 0, 0, 0
	for s < len(src) {
		tag := src[s]
		var length int
		switch tag & 0x03 {
		case 0x00: // literal
			x := int(tag >> 2)
			switch {
			case x < 60:
				s++
			default:
				// 60..63: the length-1 follows in 1..4 little-endian bytes.
				k := x - 59
				if !need(s+1, k) {
					return 0, errS2Corrupt
				}
				x = 0
				for i := k; i >= 1; i-- {
					x = x<<8 | int(src[s+i])
				}
				s += 1 + k
			}
			length = x + 1
			if length > want-d || !need(s, length) {
				return 0, errS2Corrupt
			}
			d += length
			s += length
			continue
		case 0x01: // copy with a 1-byte offset, or S2's repeat
			if !need(s, 2) {
				return 0, errS2Corrupt
			}
			length = int(tag>>2) & 0x7
			toff := int(tag&0xe0)<<3 | int(src[s+1])
			s += 2
			if toff == 0 {
				switch length {
				case 5:
					if !need(s, 1) {
						return 0, errS2Corrupt
					}
					length = int(src[s]) + 4
					s++
				case 6:
					if !need(s, 2) {
						return 0, errS2Corrupt
					}
					length = (int(src[s]) | int(src[s+1])<<8) + 1<<8
					s += 2
				case 7:
					if !need(s, 3) {
						return 0, errS2Corrupt
					}
					length = (int(src[s]) | int(src[s+1])<<8 | int(src[s+2])<<16) + 1<<16
					s += 3
				}
			} else {
				offset = toff
			}
			length += 4
		case 0x02: // copy with a 2-byte offset
			if !need(s, 3) {
				return 0, errS2Corrupt
			}
			length = 1 + int(tag>>2)
			offset = int(src[s+1]) | int(src[s+2])<<8
			s += 3
		case 0x03: // copy with a 4-byte offset
			if !need(s, 5) {
				return 0, errS2Corrupt
			}
			length = 1 + int(tag>>2)
			offset = int(binary.LittleEndian.Uint32(src[s+1:]))
			s += 5
		}
		if offset <= 0 || d < offset || length > want-d {
			return 0, errS2Corrupt
		}
		d += length
	}
	if d != want {
		return 0, errS2Corrupt
	}
	return want, nil
}
