package tiered

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
)

// bombs are compressed typed values a writer to Redis can plant on an
// unsigned route, each refused by a route with the default MaxValueBytes.
func bombs() map[string][]byte {
	lying := []byte{frameS2}
	lying = binary.AppendUvarint(lying, 64<<20) // claims 64 MiB
	lying = append(lying, 0x00, 'x')            // holds one literal byte
	return map[string][]byte{
		// 7 bytes whose header claims 64 MiB: the old decoder allocated
		// the claimed size on every read before finding out.
		"lying-7B": lying,
		// A valid block: 64 MiB of zeros in 29 bytes.
		"real-64MiB": append([]byte{frameS2}, s2.Encode(nil, make([]byte, 64<<20))...),
		// A valid block under the old fixed 64 MiB cap but over the
		// route's 16 MiB.
		"real-32MiB": append([]byte{frameS2}, s2.Encode(nil, make([]byte, 32<<20))...),
	}
}

// heapAllocs returns the bytes allocated on the heap since the program
// started (a cumulative count: it never goes down). ReadMemStats flushes
// every P's cache first, so the count is exact.
func heapAllocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// heapPeak samples the heap's live objects every 50µs until stop is
// closed and returns the highest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	}()
	return out
}

// procStatus returns field (VmRSS, VmHWM) of /proc/self/status in bytes;
// 0 where there is none.
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetRSSPeak resets the process's peak RSS (Linux: /proc/self/clear_refs)
// and returns the RSS then, for reporting; 0 where unsupported.
func resetRSSPeak() uint64 {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0
	}
	return procStatus("VmRSS")
}

// bombAllocSlack is what 16 refused reads may allocate in all: error
// values and their text, nothing the size of a claimed payload.
const bombAllocSlack = 1 << 20

// Sixteen concurrent typed reads of a decompression bomb planted in Redis
// on an unsigned route allocate almost nothing: each is refused with
// ErrDecode before anything of the claimed or real decoded size is
// allocated. (The old decoder allocated the header's claim, up to 64 MiB,
// on every read: 1 GiB for these 16.)
func TestBombConcurrentReadsBounded(t *testing.T) {
	srv := redistest.Start(t, nil)
	c := openT(t, &Options{Redis: redisOpts(srv), Logger: slog.New(slog.DiscardHandler),
		Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis}}})
	ty := NewTyped[string](c, nil)
	for name, bomb := range bombs() {
		t.Run(name, func(t *testing.T) {
			key := "app:bomb:" + name
			now := time.Now()
			e := envelope.Entry{Header: envelope.Header{SoftExpiry: now.Add(time.Hour).UnixNano(),
				HardExpiry: now.Add(time.Hour).UnixNano(), Version: 7}, Payload: bomb}
			if _, err := srv.Do("SET", key, string(e.Append(nil))); err != nil {
				t.Fatal(err)
			}
			// The first read fills memory; the measured ones are memory
			// hits, so what they allocate is the decoding's.
			if _, _, err := ty.Get(t.Context(), key); !errors.Is(err, ErrDecode) {
				t.Fatalf("Get = %v, want ErrDecode", err)
			}
			runtime.GC()
			rss := resetRSSPeak()
			stop := make(chan struct{})
			peak := heapPeak(stop)
			s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			metrics.Read(s)
			base := s[0].Value.Uint64()
			before := heapAllocs()
			var wg sync.WaitGroup
			errs := make([]error, 16)
			for i := range errs {
				wg.Go(func() { _, _, errs[i] = ty.Get(t.Context(), key) })
			}
			wg.Wait()
			allocated := heapAllocs() - before
			close(stop)
			p := <-peak
			t.Logf("%s (%d bytes): 16 reads allocated %d bytes; heap peak %+d bytes over a %d-byte baseline; RSS %d KiB, peak %d KiB",
				name, len(bomb), allocated, int64(p)-int64(base), base, rss>>10, procStatus("VmHWM")>>10)
			for i, err := range errs {
				if !errors.Is(err, ErrDecode) || !errors.Is(err, errDecodedCap) {
					t.Errorf("read %d = %v, want ErrDecode for a size over the cap", i, err)
				}
			}
			if allocated > bombAllocSlack {
				t.Errorf("16 reads of a %d-byte bomb allocated %d bytes, want <= %d", len(bomb), allocated, bombAllocSlack)
			}
		})
	}
}

// A value within the route's limit still decodes, however well it
// compresses, and the limit is the route's own, lowered (never raised) by
// TypedOptions.MaxDecodedBytes.
func TestTypedDecodedLimitIsTheRoutes(t *testing.T) {
	c := openT(t, &Options{Logger: slog.New(slog.DiscardHandler), Routes: []Route{
		{Prefix: "small:", Tiers: Memory, MaxValueBytes: 1 << 20},
		{Prefix: "big:", Tiers: Memory, MaxValueBytes: 8 << 20},
	}})
	// 2 MiB of JSON-quoted spaces compress to a few hundred bytes.
	v := strings.Repeat(" ", 2<<20)
	tests := []struct {
		name   string
		maxDec int
		key    string
		ok     bool
	}{
		{"over the small route", 0, "small:k", false},
		{"within the big route", 0, "big:k", true},
		{"option lowers the big route", 1 << 20, "big:k", false},
		{"option cannot raise the small route", 64 << 20, "small:k", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ty := NewTyped(c, &TypedOptions[string]{CompressAbove: 1, MaxDecodedBytes: tt.maxDec})
			b, err := ty.encode(tt.key, v)
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != frameS2 || len(b) > 1<<12 {
				t.Fatalf("encoded to %d bytes, frame %d; want a small S2 block", len(b), b[0])
			}
			if err := c.Set(t.Context(), tt.key, b, 0); err != nil {
				t.Fatal(err)
			}
			got, ok, err := ty.Get(t.Context(), tt.key)
			switch {
			case tt.ok && (err != nil || !ok || got != v):
				t.Fatalf("Get = %d bytes, %v, %v; want the value", len(got), ok, err)
			case !tt.ok && !errors.Is(err, errDecodedCap):
				t.Fatalf("Get = %v, %v; want errDecodedCap", ok, err)
			}
		})
	}
}

// s2Seeds are S2 blocks that exercise every tag the decoder knows: short
// and long literals (1 to 4 length bytes), copies with 1-, 2- and 4-byte
// offsets, and repeats of each length class.
func s2Seeds() [][]byte {
	var out [][]byte
	rnd := func(n int, seed uint64) []byte {
		b := make([]byte, n)
		x := seed
		for i := range b {
			x = x*6364136223846793005 + 1442695040888963407
			b[i] = byte(x >> 56)
		}
		return b
	}
	for _, n := range []int{0, 1, 59, 60, 61, 255, 256, 65535, 65536, 70000, 1 << 20} {
		r := rnd(n, uint64(n))
		out = append(out, s2.Encode(nil, r), s2.EncodeBetter(nil, r), s2.EncodeBest(nil, r))
	}
	// Runs (repeats of every length class) and far copies (4-byte offsets).
	for _, n := range []int{5, 9, 300, 70000, 1 << 20} {
		z := bytes.Repeat([]byte("abcd"), n/4+1)
		out = append(out, s2.Encode(nil, z), s2.EncodeBest(nil, z))
	}
	far := append(rnd(70000, 9), rnd(70000, 9)...)
	out = append(out, s2.EncodeBest(nil, far), s2.EncodeBetter(nil, far))
	return out
}

// s2BlockLen agrees with s2.Decode on blocks the encoders produce.
func TestS2BlockLenAgreesWithDecode(t *testing.T) {
	for i, blk := range s2Seeds() {
		want, err := s2.Decode(nil, blk)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		n, err := s2BlockLen(blk, len(want))
		if err != nil || n != len(want) {
			t.Errorf("seed %d: s2BlockLen = %d, %v; want %d", i, n, err, len(want))
		}
		if len(want) > 0 {
			if _, err := s2BlockLen(blk, len(want)-1); !errors.Is(err, errDecodedCap) {
				t.Errorf("seed %d: s2BlockLen under a cap one byte short = %v, want errDecodedCap", i, err)
			}
		}
		// Every truncation is refused by both.
		for cut := 1; cut < len(blk) && cut < 64; cut++ {
			short := blk[:len(blk)-cut]
			_, derr := s2.Decode(nil, short)
			_, lerr := s2BlockLen(short, 1<<30)
			if (derr == nil) != (lerr == nil) {
				t.Errorf("seed %d cut %d: s2.Decode %v, s2BlockLen %v", i, cut, derr, lerr)
			}
		}
	}
}
