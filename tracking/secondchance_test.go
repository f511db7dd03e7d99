package tracking

import (
	"fmt"
	"sync"
	"testing"
)

// Under the default policy, lock-free hits mark entries instead of moving
// them; eviction must still keep what was read and drop what was not.
func TestEvictionKeepsWhatWasRead(t *testing.T) {
	const n = 8
	val := make([]byte, 100)
	perEntry := int64(len("k0")) + int64(cap(val)) + EntryOverhead
	c := newLocal(t, &Options{Shards: 1, MaxBytes: n * perEntry})
	for i := range n {
		if err := c.SetLocal(fmt.Sprintf("k%d", i), Item{Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	// Read the older half; k0 is the oldest and would go first in plain LRU.
	for i := range n / 2 {
		if _, _, ok := c.Get(fmt.Sprintf("k%d", i)); !ok {
			t.Fatalf("k%d missing before eviction", i)
		}
	}
	// n/2 new entries evict n/2 old ones: the unread k4..k7.
	for i := range n / 2 {
		if err := c.SetLocal(fmt.Sprintf("n%d", i), Item{Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		_, _, ok := c.Get(fmt.Sprintf("k%d", i))
		if read := i < n/2; ok != read {
			t.Errorf("k%d cached = %v after eviction, want %v (read before: %v)", i, ok, read, read)
		}
	}
	if st := c.Stats(); st.Evictions != n/2 || st.Bytes > st.MaxBytes {
		t.Errorf("evictions %d, bytes %d of %d; want %d evictions within the budget", st.Evictions, st.Bytes, st.MaxBytes, n/2)
	}
}

// Lock-free hits race with fills, evictions and invalidations of the same
// shard; -race checks the publication, and no hit may return an entry's
// value for another key.
func TestLockFreeHitsUnderChurn(t *testing.T) {
	c := newLocal(t, &Options{Shards: 1, MaxBytes: 64 * (EntryOverhead + 64)})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k%d", (i*7+g)%200)
				if it, _, ok := c.Get(k); ok && string(it.Value) != k {
					t.Errorf("Get(%s) = %q", k, it.Value)
					return
				}
			}
		})
	}
	for i := range 20000 {
		k := fmt.Sprintf("k%d", i%200)
		if i%5 == 0 {
			c.Invalidate(k)
			continue
		}
		_ = c.SetLocal(k, Item{Value: []byte(k)})
	}
	close(stop)
	wg.Wait()
	if st := c.Stats(); st.Bytes > st.MaxBytes || st.Hits == 0 {
		t.Fatalf("bytes %d of %d, hits %d", st.Bytes, st.MaxBytes, st.Hits)
	}
}
