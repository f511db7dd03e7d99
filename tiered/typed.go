package tiered

import (
	"context"
	"fmt"
	"time"
)

// TypedOptions configures a Typed front. A nil *TypedOptions is valid.
type TypedOptions[T any] struct {
	// Codec turns values into bytes and back. Nil means JSON.
	Codec Codec[T]
	// CompressAbove compresses (S2) encoded values of at least this many
	// bytes. Zero means never.
	CompressAbove int
	// MaxDecodedBytes refuses a compressed value that would decompress to
	// more than this, before allocating anything for it (the size is found
	// by walking the compressed block, never taken from its header). Zero,
	// or more than the key's route allows, means the route's MaxValueBytes:
	// a decoded value is held to the same limit as a stored one.
	MaxDecodedBytes int
}

// Typed is a typed front over a Cache: values of T go through a Codec, and
// optionally compression, on their way in and out. Signing, if configured,
// happens in the Cache, so a value that fails verification never reaches
// the codec.
//
// Typed and Cache share keys: Typed.Set stores one framing byte (0x00:
// plain, 0x01: S2-compressed) before the codec's bytes, so Cache.Get of such
// a value returns those framed bytes. Typed.Get reads a value Cache.Set
// stored as the codec's bytes unframed, provided they do not start with
// 0x00 or 0x01: always so for JSON; for CBOR every value but the bare
// integers 0 and 1 (which decode as a framed value and fail with
// ErrDecode, never as another value).
type Typed[T any] struct {
	c          *Cache
	codec      Codec[T]
	compress   int
	maxDecoded int // 0: the route's MaxValueBytes
}

// NewTyped returns a typed front over c.
func NewTyped[T any](c *Cache, opts *TypedOptions[T]) *Typed[T] {
	t := &Typed[T]{c: c, codec: JSON[T]{}}
	if opts != nil {
		if opts.Codec != nil {
			t.codec = opts.Codec
		}
		t.compress = opts.CompressAbove
		if opts.MaxDecodedBytes > 0 {
			t.maxDecoded = opts.MaxDecodedBytes
		}
	}
	return t
}

// Get returns key's value. A miss is (zero, false, nil). A stored value the
// codec cannot decode returns an error wrapping ErrDecode.
func (t *Typed[T]) Get(ctx context.Context, key string) (T, bool, error) {
	var zero T
	b, ok, err := t.c.Get(ctx, key)
	if err != nil || !ok {
		return zero, false, err
	}
	return t.decode(key, b)
}

// Set stores v under key for ttl (zero: the route's TTL).
func (t *Typed[T]) Set(ctx context.Context, key string, v T, ttl time.Duration) error {
	b, err := t.encode(key, v)
	if err != nil {
		return err
	}
	return t.c.Set(ctx, key, b, ttl)
}

// GetOrLoad is Cache.GetOrLoad for typed values: load returns ErrNotFound
// when the origin has none. A nil load returns an error wrapping
// ErrNoLoader.
func (t *Typed[T]) GetOrLoad(ctx context.Context, key string, load TypedLoader[T]) (T, bool, error) {
	var zero T
	if f, isFunc := load.(TypedLoaderFunc[T]); load == nil || isFunc && f == nil {
		return zero, false, opErr("load", key, ErrNoLoader)
	}
	b, ok, err := t.c.GetOrLoad(ctx, key, LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		v, err := load.Load(ctx, key)
		if err != nil {
			return nil, err
		}
		return t.encode(key, v)
	}))
	if err != nil || !ok {
		return zero, false, err
	}
	return t.decode(key, b)
}

// Delete removes key.
func (t *Typed[T]) Delete(ctx context.Context, key string) error { return t.c.Delete(ctx, key) }

func (t *Typed[T]) encode(key string, v T) ([]byte, error) {
	b, err := t.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("tiered: encode %q: %w", key, err)
	}
	return frame(b, t.compress), nil
}

func (t *Typed[T]) decode(key string, b []byte) (T, bool, error) {
	var v T
	p, err := unframe(b, t.limit(key))
	if err != nil {
		return v, false, fmt.Errorf("tiered: decode %q: %w: %w", key, ErrDecode, err)
	}
	if err := t.codec.Unmarshal(p, &v); err != nil {
		var zero T
		return zero, false, fmt.Errorf("tiered: decode %q: %w: %w", key, ErrDecode, err)
	}
	return v, true, nil
}

// limit is the most a value of key may decompress to: the route's
// MaxValueBytes, lowered by TypedOptions.MaxDecodedBytes.
func (t *Typed[T]) limit(key string) int {
	n := t.maxDecoded
	if t.c != nil {
		if r := t.c.maxValueBytes(key); n <= 0 || n > r {
			n = r
		}
	}
	return n
}
