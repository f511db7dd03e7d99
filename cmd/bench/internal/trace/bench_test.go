package trace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
)

// BenchmarkNext measures per-key decoding cost of each format against a
// plain slice walk as the baseline.
func BenchmarkNext(b *testing.B) {
	const n = 1 << 16
	var arc, text, i32 bytes.Buffer
	keys := make([]uint64, n)
	for i := range n {
		keys[i] = uint64(i * 7919 % 1_000_003)
		fmt.Fprintf(&arc, "%d 1 0 %d\n", keys[i], i)
		fmt.Fprintf(&text, "%d\n", keys[i])
		_ = binary.Write(&i32, binary.BigEndian, uint32(keys[i]))
	}
	b.Run("baseline-slice", func(b *testing.B) {
		b.ReportAllocs()
		var sink uint64
		for i := 0; b.Loop(); i++ {
			sink += keys[i%n]
		}
		_ = sink
	})
	for _, c := range []struct {
		name string
		f    Format
		data []byte
	}{{"arc", ARC, arc.Bytes()}, {"text", Text, text.Bytes()}, {"int32", Int32, i32.Bytes()}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var r *Reader
			for b.Loop() {
				if r == nil {
					r, _ = NewReader(bytes.NewReader(c.data), c.f)
				}
				if _, err := r.Next(); err == io.EOF {
					r = nil
				}
			}
		})
	}
}
