package envelope

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func sample() Entry {
	return Entry{
		Header: Header{
			Flags:      FlagCompressed,
			SoftExpiry: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(),
			HardExpiry: time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC).UnixNano(),
			Delta:      42 * time.Millisecond,
			Version:    0xdeadbeefcafef00d,
		},
		Payload: []byte("hello, thermos"),
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
	}{
		{"zero", Entry{}},
		{"sample", sample()},
		{"negative", Entry{Header: Header{Flags: FlagNegative, Version: 7}}},
		{"big", Entry{Payload: bytes.Repeat([]byte{0xAB}, 1<<16)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.e.Append(nil)
			if len(b) != tt.e.Size() {
				t.Errorf("len(Append) = %d, want Size() %d", len(b), tt.e.Size())
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !got.Equal(&tt.e) {
				t.Errorf("Decode(Append(e)) = %+v, want %+v", got.Header, tt.e.Header)
			}
		})
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	e := sample()
	b := e.Append([]byte("prefix"))
	if !bytes.HasPrefix(b, []byte("prefix")) {
		t.Fatalf("Append overwrote dst's prefix")
	}
	if _, err := Decode(b[len("prefix"):]); err != nil {
		t.Fatalf("Decode after prefix: %v", err)
	}
}

// Every single flipped bit and every truncation is detected.
func TestCorruptionDetected(t *testing.T) {
	e := sample()
	b := e.Append(nil)
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if _, err := Decode(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip byte %d bit %d: Decode err = %v, want ErrCorrupt", i, bit, err)
			}
		}
	}
	for n := range len(b) {
		if _, err := Decode(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: Decode err = %v, want ErrCorrupt", n, err)
		}
	}
	// Extending the payload breaks the checksum too.
	if _, err := Decode(append(bytes.Clone(b), 'x')); !errors.Is(err, ErrChecksum) {
		t.Fatalf("extended: Decode err = %v, want ErrChecksum", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := sample()
	b := good.Append(nil)
	badMagic := bytes.Clone(b)
	badMagic[0] = 0xE2
	badFlags := bytes.Clone(b)
	badFlags[1] = 0x80
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", b[:10], ErrShort},
		{"magic", badMagic, ErrMagic},
		{"flags", badFlags, ErrFlags},
		{"signed but short", append([]byte{Magic, byte(FlagSigned)}, make([]byte, 40)...), ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	old := &Keyring{Current: 1, Secrets: map[byte][]byte{1: []byte("old secret")}}
	rotated := &Keyring{Current: 2, Secrets: map[byte][]byte{1: []byte("old secret"), 2: []byte("new secret")}}
	onlyNew := &Keyring{Current: 2, Secrets: map[byte][]byte{2: []byte("new secret")}}

	e := sample()
	if err := e.Sign("user:1", old); err != nil {
		t.Fatal(err)
	}
	b := e.Append(nil)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify("user:1", old); err != nil {
		t.Errorf("Verify with signing ring: %v", err)
	}
	if err := got.Verify("user:1", rotated); err != nil {
		t.Errorf("Verify after rotation: %v", err)
	}
	if err := got.Verify("user:1", onlyNew); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Verify without old key = %v, want ErrUnknownKey", err)
	}
	if err := got.Verify("user:2", old); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify under another key = %v, want ErrSignature", err)
	}

	// A tampered payload with a recomputed checksum (an attacker who knows
	// the format but not the secret) fails verification.
	got.Payload = []byte("evil payload!!")
	forged, err := Decode(got.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := forged.Verify("user:1", old); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify forged = %v, want ErrSignature", err)
	}

	// A changed header field (extending the expiry) fails too.
	got, _ = Decode(b)
	got.HardExpiry += int64(time.Hour)
	forged, _ = Decode(got.Append(nil))
	if err := forged.Verify("user:1", old); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify with extended expiry = %v, want ErrSignature", err)
	}

	unsigned := sample()
	if err := unsigned.Verify("user:1", old); !errors.Is(err, ErrUnsigned) {
		t.Errorf("Verify unsigned = %v, want ErrUnsigned", err)
	}
	if err := unsigned.Sign("k", &Keyring{Current: 9}); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Sign with missing current key = %v, want ErrUnknownKey", err)
	}
}

func TestDecodeHeaderAllocatesNothing(t *testing.T) {
	e := sample()
	if err := e.Sign("k", &Keyring{Current: 1, Secrets: map[byte][]byte{1: []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	b := e.Append(nil)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeHeader(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeHeader allocates %v times, want 0", allocs)
	}
}

func FuzzDecode(f *testing.F) {
	s := sample()
	f.Add(s.Append(nil))
	signed := sample()
	_ = signed.Sign("k", &Keyring{Current: 3, Secrets: map[byte][]byte{3: []byte("x")}})
	f.Add(signed.Append(nil))
	f.Add([]byte{})
	f.Add([]byte{Magic})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		enc := e.Append(nil)
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding %x gave %x", b, enc)
		}
		e2, err := Decode(enc)
		if err != nil || !e2.Equal(&e) {
			t.Fatalf("round trip of %x changed it: %v", b, err)
		}
	})
}

func BenchmarkDecodeHeader(b *testing.B) {
	e := sample()
	e.Payload = bytes.Repeat([]byte{1}, 100)
	buf := e.Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeHeader(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVersionOffset(t *testing.T) {
	e := Entry{Header: Header{Version: 0x0102030405060708}, Payload: []byte("p")}
	b := e.Append(nil)
	got := b[VersionOffset : VersionOffset+VersionSize]
	if string(got) != "\x01\x02\x03\x04\x05\x06\x07\x08" {
		t.Fatalf("bytes at VersionOffset = %x, want the version 0102030405060708", got)
	}
}
