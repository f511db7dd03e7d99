package trace

import (
	"bytes"
	"fmt"
	"io"
)

// sniffBytes is how much decompressed content NewReader looks at to tell
// or check a trace's format.
const sniffBytes = 1 << 16

// sniffLines is how many complete text lines the check reads.
const sniffLines = 200

// verdict is what a sample of content shows.
type verdict struct {
	format Format // Auto: more than one format fits
	why    string // the evidence, for error messages
	binary bool   // the content is not text
}

// resolve returns the format to read sample's trace with: named, checked
// against the content, or detected from it.
func resolve(named Format, sample []byte, eof bool) (Format, error) {
	if len(sample) == 0 {
		if named == Auto {
			return "", fmt.Errorf("%w: the trace is empty, so its format cannot be told; name it (arc, text, int32, int64)", ErrFormat)
		}
		return named, nil
	}
	v, err := classify(sample, eof)
	if err != nil {
		return "", err
	}
	switch {
	case named == Auto && v.format == Auto:
		return "", fmt.Errorf("%w: cannot tell the trace's format: %s; name it (path:int32 or path:int64, path:arc or path:text)", ErrFormat, v.why)
	case named == Auto:
		return v.format, nil
	case v.binary != (named == Int32 || named == Int64):
		kind := "text"
		if v.binary {
			kind = "binary"
		}
		return "", fmt.Errorf("%w: named %s, but the content is %s (%s)", ErrFormat, named, kind, v.why)
	case v.format != Auto && v.format != named:
		return "", fmt.Errorf("%w: named %s, but the content is %s: %s", ErrFormat, named, v.format, v.why)
	case named == Int64 && eof && len(sample)%8 != 0:
		return "", fmt.Errorf("%w: named int64, but its %d bytes are not a whole number of 8-byte records", ErrFormat, len(sample))
	}
	return named, nil
}

// classify looks at the first bytes of a trace (all of it when eof).
func classify(b []byte, eof bool) (verdict, error) {
	if isText(b) {
		return classifyText(b, eof), nil
	}
	return classifyBinary(b, eof)
}

// isText reports whether b holds only printable ASCII and line whitespace,
// as every text trace format here does.
func isText(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}

func classifyText(b []byte, eof bool) verdict {
	if !eof { // the last line may be cut short by the sample's end
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			b = b[:i]
		}
	}
	var one, arc, lines int
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		lines++
		if len(f) == 1 {
			one++
		}
		if len(f) >= 2 {
			_, ok0 := parseUint(f[0])
			_, ok1 := parseUint(f[1])
			if ok0 && ok1 {
				arc++
			}
		}
		if lines == sniffLines {
			break
		}
	}
	switch {
	case lines == 0:
		return verdict{format: Auto, why: "text without a single key"}
	case one == lines:
		return verdict{format: Text, why: "text with one key per line"}
	case arc == lines:
		return verdict{format: ARC, why: `text lines of "start nblocks ..." numbers`}
	}
	return verdict{format: Auto, why: fmt.Sprintf("text lines of mixed shapes (%d of %d with one field, %d of %d starting with two numbers)", one, lines, arc, lines)}
}

// classifyBinary tells big-endian int32 keys from int64 ones.
func classifyBinary(b []byte, eof bool) (verdict, error) {
	bin := func(f Format, format string, args ...any) (verdict, error) {
		return verdict{format: f, why: fmt.Sprintf(format, args...), binary: true}, nil
	}
	switch {
	case eof && len(b)%4 != 0:
		return verdict{}, fmt.Errorf("%w: binary content of %d bytes is not a whole number of 4-byte (int32) or 8-byte (int64) records", ErrFormat, len(b))
	case eof && len(b)%8 != 0:
		return bin(Int32, "%d bytes: a whole number of 4-byte records but not of 8-byte ones", len(b))
	case len(b) < 64:
		return bin(Auto, "only %d bytes of binary content, too few to tell 4-byte keys from 8-byte ones", len(b))
	}
	b = b[:len(b)/8*8]
	words := func(i int) uint64 {
		return uint64(b[i])<<24 | uint64(b[i+1])<<16 | uint64(b[i+2])<<8 | uint64(b[i+3])
	}
	even, odd, all := map[uint64]bool{}, map[uint64]bool{}, map[uint64]bool{}
	pairs := map[uint64]bool{}
	zeroHigh := true
	for i := 0; i < len(b); i += 8 {
		hi, lo := words(i), words(i+4)
		even[hi], odd[lo], all[hi], all[lo] = true, true, true, true
		pairs[hi<<32|lo] = true
		zeroHigh = zeroHigh && hi == 0
	}
	n64 := len(b) / 8
	n32 := 2 * n64
	de, do := len(even), len(odd)
	switch {
	case zeroHigh && do > 1:
		return bin(Int64, "the high 4 bytes of every 8-byte record are zero (keys below 2^32 stored in 8 bytes); read as int32, every other key would be 0")
	case 2*min(de, do) < max(de, do):
		return bin(Int64, "the first and second halves of each 8-byte record differ in distribution (%d and %d distinct values in %d records), as high and low words of 8-byte keys do", de, do, n64)
	}
	u32 := float64(len(all)) / float64(n32)
	u64 := float64(len(pairs)) / float64(n64)
	if u64 > 1.5*u32 && u64-u32 > 0.1 {
		return bin(Int32, "4-byte keys repeat (%.0f %% distinct) where 8-byte pairs do not (%.0f %% distinct)", 100*u32, 100*u64)
	}
	return bin(Auto, "4-byte keys (%.0f %% distinct) and 8-byte keys (%.0f %% distinct) both fit", 100*u32, 100*u64)
}

// Info is what a whole trace holds.
type Info struct {
	Format   Format // as named, or as detected
	Accesses int64
	Unique   int64 // distinct keys
}

// CompulsoryMissRatio is the share of accesses that miss in any cache that
// starts empty: the first access of each key. 1 minus it bounds every
// policy's hit ratio at every size.
func (i Info) CompulsoryMissRatio() float64 {
	if i.Accesses == 0 {
		return 0
	}
	return float64(i.Unique) / float64(i.Accesses)
}

// Scan reads the trace at path to its end, at most limit accesses (0: all),
// and counts its accesses and distinct keys. It returns the first error
// Open or Next would, so a trace that Scan accepts replays without one.
func Scan(path string, f Format, limit int64) (Info, error) {
	r, err := Open(path, f)
	if err != nil {
		return Info{}, err
	}
	defer r.Close()
	info := Info{Format: r.Format()}
	seen := map[uint64]struct{}{}
	for limit <= 0 || info.Accesses < limit {
		k, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return info, fmt.Errorf("trace: %s: %w", path, err)
		}
		info.Accesses++
		seen[k] = struct{}{}
	}
	info.Unique = int64(len(seen))
	return info, nil
}
