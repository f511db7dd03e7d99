package trace

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format names a trace's record layout.
type Format string

// Formats that Open and NewReader understand.
const (
	Auto  Format = ""      // detect from the content, see NewReader
	ARC   Format = "arc"   // "start nblocks ignore reqno" lines
	Text  Format = "text"  // one key per line
	Int32 Format = "int32" // big-endian 4-byte keys
	Int64 Format = "int64" // big-endian 8-byte keys
)

// ErrFormat is returned for an unknown format name, a trace whose format
// cannot be told from its content, a named format the content contradicts
// (an int64 trace named int32, a text trace named binary, a size that is
// not a whole number of records), or a record that does not parse (the
// error names the line or byte offset). Test for it with
// errors.Is(err, trace.ErrFormat).
var ErrFormat = errors.New("trace: bad format")

// ParseFormat returns the Format named s ("arc", "text", "int32", "int64";
// "" or "auto" for Auto).
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case ARC, Text, Int32, Int64:
		return f, nil
	case Auto, "auto":
		return Auto, nil
	}
	return "", fmt.Errorf("%w: unknown trace format %q (want arc, text, int32 or int64)", ErrFormat, s)
}

// Reader yields a trace's keys in order.
type Reader struct {
	format  Format
	next    func() (uint64, error)
	closers []func() error

	br   *bufio.Reader
	line int // lines read (text formats)
	off  int64

	// ARC expansion state: the next block and how many remain.
	block, left uint64
}

// Open opens the trace at path, of format f or, with Auto, of the format
// its content shows (see NewReader).
func Open(path string, f Format) (*Reader, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	r, err := NewReader(file, f)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("trace: open %s: %w", path, err)
	}
	r.closers = append(r.closers, file.Close)
	return r, nil
}

// NewReader reads a trace of format f from src, decompressing zstd or xz
// when src starts with their magic bytes. Close releases the decoder; it
// does not close src.
//
// Before the first key, NewReader looks at up to the first 64 KiB of the
// decompressed content. With Auto it takes the format the content shows:
// text lines of "start nblocks ..." numbers are ARC, text lines of one
// field are Text; binary content is Int32 or Int64 when only one of them
// fits (a length that is a multiple of 4 but not of 8; 8-byte records
// whose high and low halves differ in distribution, such as keys below
// 2^32 stored in 8 bytes; or 4-byte keys that repeat where 8-byte pairs do
// not). When the content fits several formats equally, or a named format
// contradicts it, NewReader refuses with ErrFormat instead of replaying a
// trace wrongly: name the format, or fix the file. A length that is not a
// whole number of records is also reported by Next at the end; Scan reads
// a whole trace to check it before anything is replayed.
func NewReader(src io.Reader, f Format) (*Reader, error) {
	r := &Reader{}
	in := bufio.NewReaderSize(src, 1<<16)
	magic, _ := in.Peek(6)
	var dec io.Reader = in
	switch {
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("trace: zstd: %w", err)
		}
		r.closers = append(r.closers, func() error { z.Close(); return nil })
		dec = z
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		x, err := xz.NewReader(in)
		if err != nil {
			return nil, fmt.Errorf("trace: xz: %w", err)
		}
		dec = x
	}
	if dec == io.Reader(in) {
		r.br = in
	} else {
		r.br = bufio.NewReaderSize(dec, 1<<16)
	}
	sample, err := r.br.Peek(sniffBytes)
	eof := err == io.EOF
	if err != nil && !eof && err != bufio.ErrBufferFull {
		r.Close()
		return nil, fmt.Errorf("trace: read: %w", err)
	}
	if f, err = resolve(f, sample, eof); err != nil {
		r.Close()
		return nil, err
	}
	r.format = f
	switch f {
	case ARC:
		r.next = r.nextARC
	case Text:
		r.next = r.nextText
	case Int32:
		r.next = r.nextInt32
	case Int64:
		r.next = r.nextInt64
	default:
		r.Close()
		return nil, fmt.Errorf("%w: cannot read format %q", ErrFormat, f)
	}
	return r, nil
}

// Format returns the trace's format: the one named, or the one detected.
func (r *Reader) Format() Format { return r.format }

// Next returns the next key, or io.EOF after the last one.
func (r *Reader) Next() (uint64, error) { return r.next() }

// Close releases the decoder and, for Open, the file. It is safe to call
// twice.
func (r *Reader) Close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	r.closers = nil
	return errors.Join(errs...)
}

// readLine returns the next line without its end, or io.EOF.
func (r *Reader) readLine() ([]byte, error) {
	b, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, fmt.Errorf("%w: line %d longer than %d bytes", ErrFormat, r.line+1, r.br.Size())
	}
	if err == io.EOF && len(b) == 0 {
		return nil, io.EOF
	}
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("trace: read: %w", err)
	}
	r.line++
	return bytes.TrimRight(b, "\r\n"), nil
}

func (r *Reader) nextARC() (uint64, error) {
	for r.left == 0 {
		b, err := r.readLine()
		if err != nil {
			return 0, err
		}
		f0, rest := nextField(b)
		f1, _ := nextField(rest)
		if f0 == nil {
			continue
		}
		if f1 == nil {
			return 0, fmt.Errorf("%w: ARC line %d: want \"start nblocks ignore reqno\", got %q", ErrFormat, r.line, b)
		}
		start, ok0 := parseUint(f0)
		n, ok1 := parseUint(f1)
		if !ok0 || !ok1 {
			return 0, fmt.Errorf("%w: ARC line %d: start and nblocks must be unsigned integers, got %q", ErrFormat, r.line, b)
		}
		r.block, r.left = start, n
	}
	k := r.block
	r.block++
	r.left--
	return k, nil
}

func (r *Reader) nextText() (uint64, error) {
	for {
		b, err := r.readLine()
		if err != nil {
			return 0, err
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			continue
		}
		if k, ok := parseUint(b); ok {
			return k, nil
		}
		h := fnv.New64a()
		_, _ = h.Write(b)
		return h.Sum64(), nil
	}
}

func (r *Reader) nextFixed(size int) ([]byte, error) {
	b, err := r.br.Peek(size)
	switch {
	case len(b) == size:
	case len(b) == 0 && err == io.EOF:
		return nil, io.EOF
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, fmt.Errorf("%w: %d stray bytes at offset %d (keys are %d bytes)", ErrFormat, len(b), r.off, size)
	default:
		return nil, fmt.Errorf("trace: read: %w", err)
	}
	_, _ = r.br.Discard(size)
	r.off += int64(size)
	return b, nil
}

func (r *Reader) nextInt32() (uint64, error) {
	b, err := r.nextFixed(4)
	if err != nil {
		return 0, err
	}
	return uint64(binary.BigEndian.Uint32(b)), nil
}

func (r *Reader) nextInt64() (uint64, error) {
	b, err := r.nextFixed(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// nextField returns the first space-separated field of b and what follows
// it, or nil if b holds only spaces.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	if i == j {
		return nil, nil
	}
	return b[i:j], b[j:]
}

// parseUint parses a decimal uint64 without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
