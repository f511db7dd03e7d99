package trace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func readAll(t *testing.T, r *Reader) []uint64 {
	t.Helper()
	var keys []uint64
	for {
		k, err := r.Next()
		if err == io.EOF {
			return keys
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		keys = append(keys, k)
	}
}

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func xzBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFormats(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		data   []byte
		want   []uint64
	}{
		{"arc expands blocks", ARC, []byte("10 3 0 0\n\n7 1 0 1\r\n5 0 0 2\n100 2 0 3"), []uint64{10, 11, 12, 7, 100, 101}},
		{"text numbers", Text, []byte("1\n22\n\n 333 \n"), []uint64{1, 22, 333}},
		{"int32 big-endian", Int32, be32(1, 0x01020304, 0xffffffff), []uint64{1, 0x01020304, 0xffffffff}},
		{"int64 big-endian", Int64, be64(7, 1<<40), []uint64{7, 1 << 40}},
		{"empty", Int32, nil, nil},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			name string
			enc  func(*testing.T, []byte) []byte
		}{
			{"plain", func(_ *testing.T, b []byte) []byte { return b }},
			{"zstd", zstdBytes},
			{"xz", xzBytes},
		} {
			t.Run(tt.name+"/"+c.name, func(t *testing.T) {
				r, err := NewReader(bytes.NewReader(c.enc(t, tt.data)), tt.format)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if got := readAll(t, r); !slices.Equal(got, tt.want) {
					t.Errorf("keys = %v, want %v", got, tt.want)
				}
			})
		}
	}
}

func TestTextHashesNonNumericKeys(t *testing.T) {
	r, err := NewReader(bytes.NewReader([]byte("user:1\nuser:2\nuser:1\n")), Text)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, r)
	if len(got) != 3 || got[0] != got[2] || got[0] == got[1] {
		t.Errorf("keys = %v, want three keys with the first and last equal", got)
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		data   string
	}{
		{"arc one field", ARC, "12\n"},
		{"arc not a number", ARC, "12 x 0 0\n"},
		{"arc not a number past the sample", ARC, strings.Repeat("1 1 0 0\n", 10_000) + "12 x 0 0\n"},
		{"int32 stray bytes", Int32, "\x00\x00\x00\x01\x00\x02"},
		{"int64 stray bytes", Int64, "\x00\x00\x00\x01"},
	}
	for _, tt := range tests {
		// Refused up front, by the content check, or by Next.
		r, err := NewReader(bytes.NewReader([]byte(tt.data)), tt.format)
		for err == nil {
			_, err = r.Next()
		}
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: error = %v, want ErrFormat", tt.name, err)
		}
	}
	if _, err := NewReader(bytes.NewReader(nil), "csv"); !errors.Is(err, ErrFormat) {
		t.Errorf("NewReader(csv) error = %v, want ErrFormat", err)
	}
	if _, err := ParseFormat("csv"); !errors.Is(err, ErrFormat) {
		t.Errorf("ParseFormat(csv) error = %v, want ErrFormat", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.lis"), Auto); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) error = %v, want os.ErrNotExist", err)
	}
}

// zipfKeys returns n accesses of a skewed trace over keys below 1<<20, the
// kind of reuse real traces have.
func zipfKeys(n int) []uint64 {
	r := rand.New(rand.NewPCG(1, 2))
	z := rand.NewZipf(r, 1.1, 1, 1<<20)
	k := make([]uint64, n)
	for i := range k {
		k[i] = z.Uint64()*2654435761%(1<<31) + 1
	}
	return k
}

func be32(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func be64(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return b
}

// TestDetect checks that Auto tells every format from content alone, and
// refuses content that fits several or none, whatever the file is named.
func TestDetect(t *testing.T) {
	keys := zipfKeys(40_000)
	hashed := make([]uint64, len(keys))
	for i, k := range keys {
		hashed[i] = k * 0x9E3779B97F4A7C15
	}
	var arc, text strings.Builder
	for i, k := range keys[:5000] {
		fmt.Fprintf(&arc, "%d %d 0 %d\n", k, 1+i%3, i)
		fmt.Fprintf(&text, "%d\n", k)
	}
	tests := []struct {
		name string
		data []byte
		want Format // Auto: refused with ErrFormat
	}{
		{"arc", []byte(arc.String()), ARC},
		{"text", []byte(text.String()), Text},
		{"text of words", []byte("user:1\nuser:2\n"), Text},
		{"int32", be32(keys...), Int32},
		{"int32, odd record count", be32(keys[:1001]...), Int32},
		{"int64 of keys below 2^32", be64(keys...), Int64},
		{"int64 with a constant high word", be64(func() []uint64 {
			k := slices.Clone(keys)
			for i := range k {
				k[i] |= 7 << 32
			}
			return k
		}()...), Int64},
		{"int64 of 64-bit hashes: ambiguous", be64(hashed...), Auto},
		{"6 bytes: no whole record", []byte{0, 0, 0, 1, 0, 2}, Auto},
		{"binary too short", be32(1, 2), Auto},
		{"empty", nil, Auto},
		{"text of mixed lines", []byte("1 2 0 0\n7\n"), Auto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, enc := range []func(*testing.T, []byte) []byte{func(_ *testing.T, b []byte) []byte { return b }, zstdBytes} {
				r, err := NewReader(bytes.NewReader(enc(t, tt.data)), Auto)
				if tt.want == Auto {
					if !errors.Is(err, ErrFormat) {
						t.Fatalf("NewReader(Auto) = %v, want ErrFormat", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("NewReader(Auto): %v", err)
				}
				if r.Format() != tt.want {
					t.Errorf("detected %q, want %q", r.Format(), tt.want)
				}
				r.Close()
			}
		})
	}
}

// TestNamedFormatMustFitContent checks that a named format the content
// contradicts is refused before the first key: an int64 trace is never
// replayed as twice as many int32 keys, a text trace never as binary.
func TestNamedFormatMustFitContent(t *testing.T) {
	keys := zipfKeys(20_000)
	tests := []struct {
		name  string
		named Format
		data  []byte
	}{
		{"int64 trace named int32", Int32, be64(keys...)},
		{"int32 trace named int64", Int64, be32(keys[:1001]...)},
		{"int32 trace (with reuse) named int64", Int64, be32(keys...)},
		{"text trace named int32", Int32, []byte("1\n2\n3\n")},
		{"binary trace named arc", ARC, be32(keys...)},
		{"arc trace named text", Text, []byte("1 2 0 0\n5 1 0 1\n")},
		{"text trace named arc", ARC, []byte("1\n2\n")},
		{"length not a multiple of 4", Int32, append(be32(keys[:1000]...), 0, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewReader(bytes.NewReader(tt.data), tt.named); !errors.Is(err, ErrFormat) {
				t.Errorf("NewReader(%s) = %v, want ErrFormat", tt.named, err)
			}
		})
	}
	// A name settles what content alone cannot.
	hashed := make([]uint64, 1000)
	for i := range hashed {
		hashed[i] = uint64(i%100+1) * 0x9E3779B97F4A7C15
	}
	r, err := NewReader(bytes.NewReader(be64(hashed...)), Int64)
	if err != nil {
		t.Fatalf("NewReader(int64) of 64-bit hashes: %v", err)
	}
	if got := readAll(t, r); !slices.Equal(got, hashed) {
		t.Errorf("int64 keys differ from the written ones")
	}
}

func TestScan(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.bin.xz")
	keys := []uint64{5, 6, 5, 7, 5, 6}
	data := be32(append(slices.Repeat(keys, 100), 1<<20)...)
	if err := os.WriteFile(p, xzBytes(t, data), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := Scan(p, Auto, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Format: Int32, Accesses: 601, Unique: 4}); info != want {
		t.Errorf("Scan = %+v, want %+v", info, want)
	}
	if got, want := info.CompulsoryMissRatio(), 4.0/601; got != want {
		t.Errorf("CompulsoryMissRatio = %v, want %v", got, want)
	}
	if info, err := Scan(p, Auto, 3); err != nil || info.Accesses != 3 || info.Unique != 2 {
		t.Errorf("Scan(limit 3) = %+v, %v; want 3 accesses of 2 keys", info, err)
	}
	// A trace that goes bad past the sample is refused by Scan, before any
	// replay.
	bad := filepath.Join(t.TempDir(), "bad.lis")
	if err := os.WriteFile(bad, append(bytes.Repeat([]byte("1 1 0 0\n"), 20_000), "2 x 0 0\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(bad, Auto, 0); !errors.Is(err, ErrFormat) {
		t.Errorf("Scan(bad line past the sample) = %v, want ErrFormat", err)
	}
	stray := filepath.Join(t.TempDir(), "stray.bin")
	if err := os.WriteFile(stray, append(be32(zipfKeys(20_000)...), 0, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(stray, Int32, 0); !errors.Is(err, ErrFormat) {
		t.Errorf("Scan(2 stray bytes past the sample) = %v, want ErrFormat", err)
	}
}

func TestOpenFileAndClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.lis.zst")
	if err := os.WriteFile(p, zstdBytes(t, []byte("3 2 0 0\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(p, Auto)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("keys = %v, want [3 4]", got)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestParseUint(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"18446744073709551615", 18446744073709551615, true},
		{"18446744073709551616", 0, false},
		{"-1", 0, false},
		{"1x", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		if got, ok := parseUint([]byte(tt.in)); got != tt.want || ok != tt.ok {
			t.Errorf("parseUint(%q) = %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
