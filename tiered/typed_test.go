package tiered

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/klauspost/compress/s2"
)

type profile struct {
	Name  string   `json:"name" cbor:"name"`
	Age   int      `json:"age" cbor:"age"`
	Roles []string `json:"roles" cbor:"roles"`
}

func TestTypedRoundTrip(t *testing.T) {
	cb, err := NewCBOR[profile]()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts *TypedOptions[profile]
	}{
		{"json", nil},
		{"cbor", &TypedOptions[profile]{Codec: cb}},
		{"json compressed", &TypedOptions[profile]{CompressAbove: 1}},
		{"cbor compressed", &TypedOptions[profile]{Codec: cb, CompressAbove: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openT(t, nil)
			ty := NewTyped(c, tt.opts)
			ctx := context.Background()
			want := profile{Name: "ada", Age: 36, Roles: []string{"admin", "ops", "ops", "ops", "ops", "ops", "ops"}}
			if err := ty.Set(ctx, "p:1", want, 0); err != nil {
				t.Fatal(err)
			}
			got, ok, err := ty.Get(ctx, "p:1")
			if err != nil || !ok || got.Name != want.Name || got.Age != want.Age || len(got.Roles) != len(want.Roles) {
				t.Fatalf("Get = %+v, %v, %v; want %+v", got, ok, err, want)
			}
			loaded, ok, err := ty.GetOrLoad(ctx, "p:2", TypedLoaderFunc[profile](func(context.Context, string) (profile, error) { return want, nil }))
			if err != nil || !ok || loaded.Name != "ada" {
				t.Fatalf("GetOrLoad = %+v, %v, %v", loaded, ok, err)
			}
			_, ok, err = ty.GetOrLoad(ctx, "p:3", TypedLoaderFunc[profile](func(context.Context, string) (profile, error) { return profile{}, ErrNotFound }))
			if err != nil || ok {
				t.Fatalf("GetOrLoad of a missing value = %v, %v; want a miss", ok, err)
			}
		})
	}
}

// TestTypedAndCacheShareKeys: what the Typed docs promise about values
// crossing between Cache and Typed. Typed.Get reads the codec's bytes
// stored by Cache.Set (JSON, and CBOR), refuses with ErrDecode the two CBOR
// values that look framed, and Cache.Get of a Typed.Set value is the
// framing byte then the codec's bytes.
func TestTypedAndCacheShareKeys(t *testing.T) {
	cb, err := NewCBOR[profile]()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := openT(t, nil)
	want := profile{Name: "ada", Age: 36, Roles: []string{"admin"}}
	for _, tt := range []struct {
		name  string
		codec Codec[profile]
	}{{"json", JSON[profile]{}}, {"cbor", cb}} {
		t.Run(tt.name, func(t *testing.T) {
			ty := NewTyped(c, &TypedOptions[profile]{Codec: tt.codec})
			raw, err := tt.codec.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Set(ctx, "raw:"+tt.name, raw, 0); err != nil {
				t.Fatal(err)
			}
			got, ok, err := ty.Get(ctx, "raw:"+tt.name)
			if err != nil || !ok || got.Name != want.Name || got.Age != want.Age || len(got.Roles) != 1 {
				t.Fatalf("Typed.Get of Cache.Set's bytes = %+v, %v, %v; want %+v", got, ok, err, want)
			}
			if err := ty.Set(ctx, "typed:"+tt.name, want, 0); err != nil {
				t.Fatal(err)
			}
			b, ok, err := c.Get(ctx, "typed:"+tt.name)
			if err != nil || !ok || len(b) == 0 || b[0] != framePlain || !bytes.Equal(b[1:], raw) {
				t.Fatalf("Cache.Get of a Typed.Set value = %x, %v, %v; want 00 then %x", b, ok, err, raw)
			}
		})
	}
	ints, err := NewCBOR[int]()
	if err != nil {
		t.Fatal(err)
	}
	ti := NewTyped(c, &TypedOptions[int]{Codec: ints})
	for _, n := range []int{0, 1, 2, 1000} {
		raw, err := ints.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "int", raw, 0); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ti.Get(ctx, "int")
		switch {
		case n <= 1 && !errors.Is(err, ErrDecode):
			t.Errorf("Typed.Get of CBOR %d (%x) stored by Cache.Set = %d, %v, %v; want ErrDecode", n, raw, got, ok, err)
		case n > 1 && (err != nil || !ok || got != n):
			t.Errorf("Typed.Get of CBOR %d stored by Cache.Set = %d, %v, %v", n, got, ok, err)
		}
	}
}

// A compressed value that claims a huge decoded size is refused before any
// decompression.
func TestUnframeRefusesBomb(t *testing.T) {
	big := bytes.Repeat([]byte{'a'}, 1<<20)
	framed := frame(big, 1)
	if framed[0] != frameS2 || len(framed) > len(big)/10 {
		t.Fatalf("1 MiB of 'a' framed to %d bytes with frame %d; want compressed", len(framed), framed[0])
	}
	if _, err := unframe(framed, 1<<10); !errors.Is(err, errDecodedCap) {
		t.Fatalf("unframe with 1 KiB cap = %v, want errDecodedCap", err)
	}
	got, err := unframe(framed, 2<<20)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("unframe within cap: %v", err)
	}
	c := openT(t, nil)
	raw := NewTyped[string](c, &TypedOptions[string]{MaxDecodedBytes: 1 << 10})
	if err := c.Set(context.Background(), "bomb", append([]byte{frameS2}, s2.Encode(nil, bytes.Repeat([]byte{'"'}, 1<<20))...), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.Get(context.Background(), "bomb"); !errors.Is(err, ErrDecode) {
		t.Fatalf("typed Get of a bomb = %v, want ErrDecode", err)
	}
}

// FuzzUnframe checks the framing decoder against s2.Decode itself: it
// accepts exactly the blocks s2.Decode accepts within the cap, returns the
// same bytes, refuses the others, and never returns more than the cap.
func FuzzUnframe(f *testing.F) {
	f.Add(frame([]byte("hello"), 0))
	f.Add(frame(bytes.Repeat([]byte("xyz"), 100), 1))
	f.Add([]byte{frameS2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	for _, b := range bombs() {
		f.Add(b)
	}
	for _, blk := range s2Seeds() {
		if len(blk) < 1<<12 {
			f.Add(append([]byte{frameS2}, blk...))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 16
		p, err := unframe(b, limit)
		if len(b) > 0 && b[0] == frameS2 {
			// s2.Decode allocates what the header claims: ask it only
			// about claims a test can afford.
			if n, lerr := s2.DecodedLen(b[1:]); lerr == nil && n <= 4*limit {
				want, derr := s2.Decode(nil, b[1:])
				switch {
				case derr == nil && len(want) <= limit && (err != nil || !bytes.Equal(p, want)):
					t.Fatalf("s2.Decode accepts %x (%d bytes) but unframe = %d bytes, %v", b, len(want), len(p), err)
				case derr == nil && len(want) > limit && !errors.Is(err, errDecodedCap):
					t.Fatalf("s2.Decode gives %d bytes for %x, past the cap, but unframe = %v", len(want), b, err)
				case derr != nil && err == nil:
					t.Fatalf("s2.Decode refuses %x (%v) but unframe accepts it", b, derr)
				}
			}
		}
		if err != nil {
			return
		}
		if len(p) > limit && b[0] == frameS2 {
			t.Fatalf("decoded %d bytes past the %d cap", len(p), limit)
		}
		// Re-framing plain gives back the same payload.
		if q, err := unframe(frame(p, 0), limit+len(b)); err != nil || !bytes.Equal(p, q) {
			t.Fatalf("round trip changed the payload: %v", err)
		}
		// So does compressing it again.
		if q, err := unframe(frame(p, 1), max(limit, len(p))); err != nil || !bytes.Equal(p, q) {
			t.Fatalf("compressed round trip changed the payload: %v", err)
		}
	})
}

func FuzzCBORDecode(f *testing.F) {
	cb, err := NewCBOR[profile]()
	if err != nil {
		f.Fatal(err)
	}
	b, _ := cb.Marshal(profile{Name: "x", Age: 1, Roles: []string{"a"}})
	f.Add(b)
	f.Add([]byte{0x9f, 0x9f, 0x9f, 0x9f}) // nested indefinite arrays
	f.Fuzz(func(t *testing.T, b []byte) {
		var p profile
		if err := cb.Unmarshal(b, &p); err != nil {
			return
		}
		if len(p.Roles) > cborMaxElements {
			t.Fatalf("decoded %d elements past the cap", len(p.Roles))
		}
	})
}

// FuzzTypedDecode feeds arbitrary stored bytes through the typed read path
// (framing, then the JSON codec): no panic, and nothing decoded past the
// decompression cap.
func FuzzTypedDecode(f *testing.F) {
	ty := &Typed[profile]{codec: JSON[profile]{}, maxDecoded: 1 << 12}
	good, _ := ty.encode("k", profile{Name: "x", Age: 3, Roles: []string{"a", "b"}})
	f.Add(good)
	f.Add(frame([]byte(`{"name":"`+string(bytes.Repeat([]byte{'a'}, 5000))+`"}`), 1))
	f.Add([]byte{framePlain, '[', '[', '['})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok, err := ty.decode("k", b)
		if err != nil {
			if ok || !errors.Is(err, ErrDecode) {
				t.Fatalf("decode error %v with ok=%v; want ErrDecode and ok=false", err, ok)
			}
			return
		}
		if len(p.Name) > len(b)+ty.maxDecoded {
			t.Fatalf("decoded a %d-byte name from %d bytes", len(p.Name), len(b))
		}
	})
}
