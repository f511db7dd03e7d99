package tiered

import (
	"encoding/json"
	"errors"
	"fmt"

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

// Framing of a typed payload: one byte saying how the rest is stored.
const (
	framePlain byte = 0
	frameS2    byte = 1 // S2 block; its header carries the decoded size
)

var (
	errFrame      = errors.New("unknown payload framing")
	errDecodedCap = errors.New("decoded size over the cap")
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

// unframe returns the payload of a framed value, refusing a compressed one
// whose decoded size exceeds maxDecoded before decompressing anything.
func unframe(b []byte, maxDecoded int) ([]byte, error) {
	if len(b) == 0 {
		return nil, errFrame
	}
	switch b[0] {
	case framePlain:
		return b[1:], nil
	case frameS2:
		n, err := s2.DecodedLen(b[1:])
		if err != nil {
			return nil, err
		}
		if n > maxDecoded {
			return nil, fmt.Errorf("%w: %d > %d", errDecodedCap, n, maxDecoded)
		}
		return s2.Decode(make([]byte, n), b[1:])
	default:
		return nil, errFrame
	}
}
