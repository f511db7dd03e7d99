package tiered

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
)

// TestReservedKeys: on a cache whose Redis route covers every key (prefix
// ""), the herd's lease keys (LockPrefix…) are not the cache's data. A
// load holds its key's lease while another process waits for it; then
// InvalidatePrefix(""), and Set, Delete, Get, GetOrLoad and GetMany of the
// lease key itself, must leave the lease where it is (deleting it would let
// the waiting process load the key a second time), and each call on the
// lease key is refused with ErrReservedKey.
func TestReservedKeys(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	routes := []Route{{Prefix: "", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}
	a := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog, Routes: routes})
	b := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog, Routes: routes})
	const key = "k"
	lockKey := herdLockPrefix(a) + "k:{" + key + "}" // see herd.slotSuffixParts

	release := make(chan struct{})
	var loads atomic.Int32
	loader := LoaderFunc(func(ctx context.Context, _ string) ([]byte, error) {
		loads.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("v"), nil
	})
	done := make(chan error, 2)
	go func() { _, _, err := a.GetOrLoad(ctx, key, loader); done <- err }()
	waitFor(t, 10*time.Second, func() bool { return loads.Load() == 1 }, "A's load to start")
	pc := plainClient(t, s)
	lease := func() string {
		v, _ := pc.Do(ctx, pc.B().Get().Key(lockKey).Build()).ToString()
		return v
	}
	token := lease()
	if token == "" {
		t.Fatalf("no lease under %q while A loads: the test's lock key is wrong", lockKey)
	}
	held := func() bool { return lease() == token }
	go func() { _, _, err := b.GetOrLoad(ctx, key, loader); done <- err }()
	waitFor(t, 10*time.Second, func() bool { return b.herdp.Load() != nil && b.herdp.Load().Stats().LockWaits > 0 }, "B to wait for A's lease")

	if _, err := a.InvalidatePrefix(ctx, ""); err != nil {
		t.Fatalf("InvalidatePrefix: %v", err)
	}
	if !held() {
		t.Errorf("InvalidatePrefix(\"\") deleted A's lease")
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"Set", func() error { return a.Set(ctx, lockKey, []byte("x"), 0) }},
		{"Delete", func() error { return a.Delete(ctx, lockKey) }},
		{"Get", func() error { _, _, err := a.Get(ctx, lockKey); return err }},
		{"GetOrLoad", func() error { _, _, err := a.GetOrLoad(ctx, lockKey, loader); return err }},
		{"GetMany", func() error { return a.GetMany(ctx, []string{lockKey})[0].Err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, ErrReservedKey) {
			t.Errorf("%s(%q) = %v, want ErrReservedKey", c.name, lockKey, err)
		}
		if !held() {
			t.Fatalf("%s(%q) removed A's lease", c.name, lockKey)
		}
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("GetOrLoad: %v", err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("the loader ran %d times for one key, want 1", n)
	}
}

// herdLockPrefix is the prefix of c's lease keys.
func herdLockPrefix(c *Cache) string { return c.o.lockPrefix() }

// TestReservedKeysFollowLockPrefix: the reserved namespace is the
// configured LockPrefix, not the default one.
func TestReservedKeysFollowLockPrefix(t *testing.T) {
	ctx := context.Background()
	c := openT(t, &Options{Logger: quietLog, LockPrefix: "svc:lk:"})
	if err := c.Set(ctx, "svc:lk:x", []byte("v"), 0); !errors.Is(err, ErrReservedKey) {
		t.Errorf("Set under the configured LockPrefix = %v, want ErrReservedKey", err)
	}
	if err := c.Set(ctx, "herd:lock:x", []byte("v"), 0); err != nil {
		t.Errorf("Set under the default LockPrefix, which this cache does not use = %v, want nil", err)
	}
	if v, ok := mustGet(t, c, "herd:lock:x"); !ok || string(v) != "v" {
		t.Errorf("Get(herd:lock:x) = %q, %v; want the value", v, ok)
	}
}

// TestReservedKeyOnDiskIsDropped: a disk entry under LockPrefix (written
// before such keys were refused) is not warmed into memory, where a hit
// would serve it, and is dropped from the disk.
func TestReservedKeyOnDiskIsDropped(t *testing.T) {
	ctx := context.Background()
	opts := &Options{Dir: t.TempDir(), Logger: quietLog,
		Routes: []Route{{Prefix: "", Tiers: Memory | Disk, TTL: time.Hour, Beta: -1}}}
	c := openT(t, opts)
	if err := c.Set(ctx, "k:1", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	const lockKey = "herd:lock:k:{k:1}"
	db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: 7}, Payload: []byte("old")}
	if err := db.Set(ctx, lockKey, e.Append(nil), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	c = openT(t, opts)
	if n := c.Stats().Warmed; n != 1 {
		t.Errorf("Warmed = %d, want 1 (k:1 only)", n)
	}
	if _, _, err := c.Get(ctx, lockKey); !errors.Is(err, ErrReservedKey) {
		t.Errorf("Get(%s) = %v, want ErrReservedKey", lockKey, err)
	}
	if _, _, ok := c.mem.Peek(lockKey); ok {
		t.Errorf("%s was warmed into memory", lockKey)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open(opts.Dir, &store.Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, ok, err := db.Get(ctx, lockKey); err != nil || ok {
		t.Errorf("store Get(%s) after the warm-up = %v, %v; want it dropped", lockKey, ok, err)
	}
}
