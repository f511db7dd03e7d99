package trace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	be32 := func(v ...uint32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.BigEndian.AppendUint32(b, x)
		}
		return b
	}
	be64 := func(v ...uint64) []byte {
		var b []byte
		for _, x := range v {
			b = binary.BigEndian.AppendUint64(b, x)
		}
		return b
	}
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
		{"int32 stray bytes", Int32, "\x00\x00\x00\x01\x00\x02"},
		{"int64 stray bytes", Int64, "\x00\x00\x00\x01"},
	}
	for _, tt := range tests {
		r, err := NewReader(bytes.NewReader([]byte(tt.data)), tt.format)
		if err != nil {
			t.Fatal(err)
		}
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
	if _, err := Open("trace.unknown", Auto); !errors.Is(err, ErrFormat) {
		t.Errorf("Open(trace.unknown) error = %v, want ErrFormat", err)
	}
}

func TestFormatOf(t *testing.T) {
	tests := []struct {
		path string
		want Format
	}{
		{"../x/P3.lis.zst", ARC},
		{"P3.lis", ARC},
		{"web07.trace.xz", Int32},
		{"keys.txt", Text},
		{"big.i64.xz", Int64},
	}
	for _, tt := range tests {
		if got, err := FormatOf(tt.path); err != nil || got != tt.want {
			t.Errorf("FormatOf(%q) = %q, %v, want %q", tt.path, got, err, tt.want)
		}
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
