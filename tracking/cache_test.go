package tracking

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
)

func newLocal(t testing.TB, opts *Options) *Cache {
	t.Helper()
	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func item(v string) Item { return Item{Value: []byte(v)} }

func mustGet(t *testing.T, c *Cache, key, want string) {
	t.Helper()
	it, fresh, ok := c.Get(key)
	if !ok || !fresh || string(it.Value) != want {
		t.Fatalf("Get(%q) = %q, fresh %v, ok %v; want %q fresh", key, it.Value, fresh, ok, want)
	}
}

func mustMiss(t *testing.T, c *Cache, key string) {
	t.Helper()
	if it, fresh, ok := c.Get(key); ok {
		t.Fatalf("Get(%q) = %q, fresh %v; want a miss", key, it.Value, fresh)
	}
}

func TestLocalSetGet(t *testing.T) {
	c := newLocal(t, nil)
	mustMiss(t, c, "k")
	if err := c.SetLocal("k", item("v1")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, "k", "v1")
	if err := c.SetLocal("k", item("v2")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, "k", "v2")
	c.Invalidate("k")
	mustMiss(t, c, "k")
	if err := c.SetLocal("", item("x")); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("SetLocal(\"\") = %v, want ErrEmptyKey", err)
	}
	st := c.Stats()
	if st.Hits != 2 || st.Misses != 2 || st.Inserts != 2 || st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFillGuard(t *testing.T) {
	c := newLocal(t, nil)
	t.Run("valid", func(t *testing.T) {
		tk := c.Reserve("a")
		if !c.Fill(tk, "a", item("1"), true) {
			t.Fatal("Fill with an untouched ticket refused")
		}
		mustGet(t, c, "a", "1")
	})
	t.Run("invalidated", func(t *testing.T) {
		tk := c.Reserve("b")
		c.Invalidate("b")
		if c.Fill(tk, "b", item("old"), true) {
			t.Fatal("Fill after Invalidate accepted")
		}
		mustMiss(t, c, "b")
	})
	t.Run("local write", func(t *testing.T) {
		tk := c.Reserve("c")
		if err := c.SetLocal("c", item("new")); err != nil {
			t.Fatal(err)
		}
		if c.Fill(tk, "c", item("old"), true) {
			t.Fatal("Fill after SetLocal accepted: it would overwrite a newer write")
		}
		mustGet(t, c, "c", "new")
	})
	t.Run("epoch bump", func(t *testing.T) {
		tk := c.Reserve("d")
		c.bumpEpoch()
		if c.Fill(tk, "d", item("old"), true) {
			t.Fatal("Fill after an epoch bump accepted")
		}
	})
	t.Run("prefix", func(t *testing.T) {
		tk := c.Reserve("p:1")
		c.InvalidatePrefix("p:")
		if c.Fill(tk, "p:1", item("old"), true) {
			t.Fatal("Fill after InvalidatePrefix accepted")
		}
	})
	t.Run("other key", func(t *testing.T) {
		tk := c.Reserve("e")
		if c.Fill(tk, "f", item("x"), true) {
			t.Fatal("Fill with another key's ticket accepted")
		}
		if c.Fill(Ticket{}, "e", item("x"), true) {
			t.Fatal("Fill with the zero ticket accepted")
		}
	})
	if st := c.Stats(); st.Refused < 5 {
		t.Errorf("Refused = %d, want >= 5", st.Refused)
	}
}

func TestInvalidatePrefix(t *testing.T) {
	c := newLocal(t, nil)
	for _, k := range []string{"u:1", "u:2", "v:1"} {
		if err := c.SetLocal(k, item(k)); err != nil {
			t.Fatal(err)
		}
	}
	c.InvalidatePrefix("u:")
	mustMiss(t, c, "u:1")
	mustMiss(t, c, "u:2")
	mustGet(t, c, "v:1", "v:1")
}

func TestExpiry(t *testing.T) {
	clk := clock.NewManual(time.Unix(1000, 0))
	c := newLocal(t, &Options{Clock: clk, MaxTTL: time.Minute})
	now := clk.Now().UnixNano()
	if err := c.SetLocal("ttl", item("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLocal("hard", Item{Value: []byte("y"), HardExpiry: now + int64(10*time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLocal("dead", Item{Value: []byte("z"), HardExpiry: now}); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, "dead")
	mustGet(t, c, "hard", "y")
	clk.Advance(10 * time.Second)
	mustMiss(t, c, "hard")
	mustGet(t, c, "ttl", "x")
	clk.Advance(50 * time.Second)
	mustMiss(t, c, "ttl")
	if st := c.Stats(); st.Expired != 2 || st.Entries != 0 {
		t.Errorf("Expired = %d, Entries = %d, want 2, 0", st.Expired, st.Entries)
	}
}

func TestEpochBumpDrops(t *testing.T) {
	c := newLocal(t, nil)
	var mu sync.Mutex
	var bumps int
	c.OnInvalidate(func(keys []string, bump bool) {
		mu.Lock()
		defer mu.Unlock()
		if bump {
			bumps++
		}
	})
	_ = c.SetLocal("k", item("v"))
	c.onInvalidations(nil)
	mustMiss(t, c, "k")
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 || st.EpochBumps != 1 || st.Epoch != 2 {
		t.Errorf("after bump: %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if bumps != 1 {
		t.Errorf("listener heard %d bumps, want 1", bumps)
	}
}

func TestKeepUnverifiedAndRevalidate(t *testing.T) {
	c := newLocal(t, &Options{KeepUnverified: true})
	_ = c.SetLocal("a", Item{Value: []byte("A"), Version: 7})
	_ = c.SetLocal("b", Item{Value: []byte("B"), Version: 8})
	c.onInvalidations(nil)

	it, fresh, ok := c.Get("a")
	if !ok || fresh || string(it.Value) != "A" {
		t.Fatalf("Get(a) after bump = %q fresh %v ok %v, want A unverified", it.Value, fresh, ok)
	}
	var got []string
	c.Unverified(func(k string, v uint64) bool { got = append(got, fmt.Sprint(k, v)); return true })
	slices.Sort(got)
	if !slices.Equal(got, []string{"a7", "b8"}) {
		t.Errorf("Unverified = %q, want [a7 b8]", got)
	}

	tk := c.Reserve("a")
	if c.Revalidate(tk, "a", 6) {
		t.Error("Revalidate with the wrong version succeeded")
	}
	if !c.Revalidate(tk, "a", 7) {
		t.Error("Revalidate with the right version failed")
	}
	mustGet(t, c, "a", "A")

	tk = c.Reserve("b")
	c.Invalidate("b")
	if c.Revalidate(tk, "b", 8) {
		t.Error("Revalidate after Invalidate succeeded")
	}
	mustMiss(t, c, "b")
	if st := c.Stats(); st.UnverifiedServes != 1 {
		t.Errorf("UnverifiedServes = %d, want 1", st.UnverifiedServes)
	}
}

func TestUnverifiedFill(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			c := newLocal(t, &Options{KeepUnverified: keep})
			if !c.Fill(c.Reserve("k"), "k", Item{Value: []byte("disk"), Version: 3}, false) {
				t.Fatal("unverified Fill refused")
			}
			_, fresh, ok := c.Get("k")
			if fresh || ok != keep {
				t.Fatalf("Get of an unverified entry: fresh %v ok %v, want fresh false ok %v", fresh, ok, keep)
			}
			if !c.Revalidate(c.Reserve("k"), "k", 3) {
				t.Fatal("Revalidate failed")
			}
			mustGet(t, c, "k", "disk")
		})
	}
}

func TestByteAccounting(t *testing.T) {
	for _, p := range []Policy{PolicyS3FIFO, PolicyLRU, PolicyTwoQueue} {
		t.Run(p.String(), func(t *testing.T) {
			const maxBytes = 64 << 10
			c := newLocal(t, &Options{MaxBytes: maxBytes, Shards: 4, Policy: p})
			rng := rand.New(rand.NewPCG(1, 2))
			var written int64
			for i := 0; written < 10*maxBytes; i++ {
				n := rng.IntN(2000)
				key := fmt.Sprintf("k%d", rng.IntN(300)) // overwrites too
				if err := c.SetLocal(key, Item{Value: make([]byte, n)}); err != nil {
					t.Fatal(err)
				}
				written += int64(n)
				if i%2 == 0 {
					c.Get(fmt.Sprintf("k%d", rng.IntN(300)))
				}
				if st := c.Stats(); st.Bytes > maxBytes {
					t.Fatalf("after %d writes: Bytes %d > MaxBytes %d", i, st.Bytes, maxBytes)
				}
			}
			// The counted bytes must equal the sum over what is actually cached.
			var sum int64
			for i := range c.shards {
				s := &c.shards[i]
				s.mu.Lock()
				var shardSum int64
				n := 0
				s.mu.pol.each(func(e *entry) bool {
					shardSum += int64(len(e.key)) + int64(cap(e.item.Value)) + EntryOverhead
					if s.idx.find(c.hash(e.key), e.key) != e {
						t.Errorf("shard %d: %q is in the policy but not the index", i, e.key)
					}
					n++
					return true
				})
				if n != s.idx.live || n != s.mu.pol.len() {
					t.Errorf("shard %d: policy walks %d entries, len %d, index %d", i, n, s.mu.pol.len(), s.idx.live)
				}
				if shardSum != s.mu.bytes || shardSum > c.cfg.shareBytes {
					t.Errorf("shard %d: counted %d, actual %d, share %d", i, s.mu.bytes, shardSum, c.cfg.shareBytes)
				}
				s.mu.Unlock()
				sum += shardSum
			}
			st := c.Stats()
			if st.Evictions == 0 || sum != st.Bytes {
				t.Errorf("Evictions %d, Bytes %d, actual %d", st.Evictions, st.Bytes, sum)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	c := newLocal(t, &Options{MaxBytes: 64 << 10, Shards: 4})
	big := Item{Value: make([]byte, c.MaxEntryBytes())}
	_ = c.SetLocal("big", item("small"))
	if err := c.SetLocal("big", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SetLocal(too large) = %v, want ErrTooLarge", err)
	}
	mustMiss(t, c, "big") // the old value must not survive a refused overwrite
	if c.Fill(c.Reserve("big"), "big", big, true) {
		t.Fatal("Fill(too large) accepted")
	}
	_ = c.SetLocal("other", item("kept"))
	mustGet(t, c, "other", "kept")
	fits := Item{Value: make([]byte, c.MaxEntryBytes()-EntryOverhead-int64(len("fits")))}
	if err := c.SetLocal("fits", fits); err != nil {
		t.Fatalf("SetLocal(exactly a share) = %v", err)
	}
	if st := c.Stats(); st.TooLarge != 2 {
		t.Errorf("TooLarge = %d, want 2", st.TooLarge)
	}
}

func TestTwoQueueKeepsFrequent(t *testing.T) {
	// A scan of keys seen once must not evict keys seen twice.
	c := newLocal(t, &Options{MaxBytes: 100 * (EntryOverhead + 8), Shards: 1, Policy: PolicyTwoQueue})
	for i := range 20 {
		_ = c.SetLocal(fmt.Sprintf("hot%02d", i), item("v"))
		c.Get(fmt.Sprintf("hot%02d", i))
	}
	for i := range 1000 {
		_ = c.SetLocal(fmt.Sprintf("scan%04d", i), item("v"))
	}
	for i := range 20 {
		mustGet(t, c, fmt.Sprintf("hot%02d", i), "v")
	}
	lru := newLocal(t, &Options{MaxBytes: 100 * (EntryOverhead + 8), Shards: 1, Policy: PolicyLRU})
	_ = lru.SetLocal("hot00", item("v"))
	lru.Get("hot00")
	for i := range 1000 {
		_ = lru.SetLocal(fmt.Sprintf("scan%04d", i), item("v"))
	}
	mustMiss(t, lru, "hot00") // the same scan does flush plain LRU
}

func TestCloseTwice(t *testing.T) {
	c, err := New(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetLocal("k", item("v"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, "k")
	if err := c.SetLocal("k", item("v")); !errors.Is(err, ErrClosed) {
		t.Errorf("SetLocal after Close = %v, want ErrClosed", err)
	}
	if c.Fill(c.Reserve("k"), "k", item("v"), true) {
		t.Error("Fill after Close accepted")
	}
	if _, _, err := c.Fetch(t.Context(), "k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Fetch after Close = %v, want ErrClosed", err)
	}
}

func TestLocalOnlyRedisMethods(t *testing.T) {
	c := newLocal(t, nil)
	if _, _, err := c.Fetch(t.Context(), "k"); !errors.Is(err, ErrNoRedis) {
		t.Errorf("Fetch = %v, want ErrNoRedis", err)
	}
	if err := c.Set(t.Context(), "k", item("v"), []byte("v"), 0); !errors.Is(err, ErrNoRedis) {
		t.Errorf("Set = %v, want ErrNoRedis", err)
	}
	if err := c.Delete(t.Context(), "k"); !errors.Is(err, ErrNoRedis) {
		t.Errorf("Delete = %v, want ErrNoRedis", err)
	}
	if c.Client() != nil || c.StalenessBound() != 0 {
		t.Error("local-only cache has a client")
	}
}

func TestConcurrentLocal(t *testing.T) {
	// Readers, writers and invalidations racing: run under -race; the
	// invariant checked is the byte budget and the accounting.
	c := newLocal(t, &Options{MaxBytes: 256 << 10, Shards: 8})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 5000 {
				k := fmt.Sprintf("k%d", rng.IntN(500))
				switch rng.IntN(4) {
				case 0:
					_ = c.SetLocal(k, Item{Value: make([]byte, rng.IntN(512))})
				case 1:
					c.Fill(c.Reserve(k), k, Item{Value: make([]byte, rng.IntN(512))}, true)
				case 2:
					c.Invalidate(k)
				default:
					c.Get(k)
				}
			}
		}()
	}
	wg.Wait()
	if st := c.Stats(); st.Bytes > st.MaxBytes || st.Bytes < 0 {
		t.Errorf("Bytes %d outside [0, %d]", st.Bytes, st.MaxBytes)
	}
}
