package memhit

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"

	"github.com/thermoscache/thermos/tracking"
)

const (
	heapEntries = 100000
	heapEnv     = "MEMHIT_HEAP_CACHE" // set in the child process: the cache to measure
)

// heapCaches are the caches measured, each filled with heapEntries keys
// of 100-byte values. "otter-item" stores tracking.Item values, as the
// memory tier does: an Item is 64 bytes where a []byte is 24.
var heapCaches = []string{"map", "golang-lru", "otter", "otter-item", "tracking"}

// fill builds cache kind over keys and vals and returns it, to be kept
// alive while the heap is measured.
func fill(t *testing.T, kind string, keys []string, vals [][]byte) any {
	switch kind {
	case "map":
		m := make(map[string][]byte)
		for i, k := range keys {
			m[k] = vals[i]
		}
		return m
	case "golang-lru":
		c, err := lru.New[string, []byte](len(keys))
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			c.Add(k, vals[i])
		}
		return c
	case "otter":
		c := otter.Must(&otter.Options[string, []byte]{MaximumSize: len(keys)})
		for i, k := range keys {
			c.Set(k, vals[i])
		}
		return c
	case "otter-item":
		c := otter.Must(&otter.Options[string, tracking.Item]{MaximumSize: len(keys)})
		for i, k := range keys {
			c.Set(k, tracking.Item{Value: vals[i]})
		}
		return c
	case "tracking":
		c, err := tracking.New(t.Context(), &tracking.Options{MaxBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if err := c.SetLocal(k, tracking.Item{Value: vals[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if n := c.Stats().Entries; n != len(keys) {
			t.Fatalf("tracking holds %d entries, want %d", n, len(keys))
		}
		return c
	}
	t.Fatalf("unknown cache %q", kind)
	return nil
}

// TestHeapPerEntry measures, in one child process per cache, the heap each
// of heapEntries entries of 100-byte values costs after a GC: in total
// (the key's and value's allocations included) and beyond them. It logs
// the table and checks that the memory tier costs no more per entry than
// otter holding the same Item values. (Against otter holding bare []byte
// values it costs more: an Item is 40 bytes larger than a slice, and the
// entry also keeps its expiry and epoch.)
func TestHeapPerEntry(t *testing.T) {
	if kind := os.Getenv(heapEnv); kind != "" {
		measureHeap(t, kind)
		return
	}
	beyond := map[string]float64{}
	for _, kind := range heapCaches {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHeapPerEntry$", "-test.count=1")
		cmd.Env = append(os.Environ(), heapEnv+"="+kind)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, out)
		}
		var total, b float64
		found := false
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) == 4 && f[0] == "heap-per-entry" && f[1] == kind {
				total, _ = strconv.ParseFloat(f[2], 64)
				b, _ = strconv.ParseFloat(f[3], 64)
				found = true
			}
		}
		if !found {
			t.Fatalf("%s: no figure in\n%s", kind, out)
		}
		beyond[kind] = b
		t.Logf("%-11s %6.1f B per entry, %6.1f beyond its key and value", kind, total, b)
	}
	for _, peer := range []string{"otter-item"} {
		if beyond["tracking"] > beyond[peer] {
			t.Errorf("tracking costs %.1f B per entry beyond key and value, more than %s's %.1f", beyond["tracking"], peer, beyond[peer])
		}
	}
}

func measureHeap(t *testing.T, kind string) {
	keys := make([]string, heapEntries)
	vals := make([][]byte, heapEntries)
	var base, before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%d", i)
		vals[i] = make([]byte, 100)
	}
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := fill(t, kind, keys, vals)
	runtime.GC()
	runtime.ReadMemStats(&after)
	kv := float64(before.HeapAlloc - base.HeapAlloc) // the keys and values themselves
	beyond := float64(after.HeapAlloc-before.HeapAlloc) / heapEntries
	fmt.Printf("heap-per-entry %s %.1f %.1f\n", kind, beyond+kv/heapEntries, beyond)
	runtime.KeepAlive(c)
	runtime.KeepAlive(keys)
	runtime.KeepAlive(vals)
}
