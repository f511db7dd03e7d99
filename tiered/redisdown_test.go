package tiered

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestOpenWhileRedisDown: a cache with a disk tier opens while Redis is
// stopped and serves by its policy — ServeStale serves the disk-warmed
// values and counts stale serves; Revalidate serves nothing unverified —
// and once Redis is back neither serves a value that changed meanwhile.
func TestOpenWhileRedisDown(t *testing.T) {
	const keys, changes = 100, 10
	s := redistest.Start(t, &redistest.Options{Persist: true})
	ctx := context.Background()
	dir := t.TempDir()
	opts := func(dir string, p UnverifiedPolicy) *Options {
		return &Options{Redis: redisOpts(s), Dir: dir, Unverified: p, Logger: quietLog,
			Routes: []Route{{Prefix: "dd:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1}}}
	}
	key := func(i int) string { return fmt.Sprintf("dd:%03d", i) }
	a := openT(t, opts(dir, Revalidate))
	for i := range keys {
		if err := a.Set(ctx, key(i), []byte("old"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// Another cache changes some keys while a is closed.
	w := openT(t, opts(t.TempDir(), Revalidate))
	for i := range changes {
		if err := w.Set(ctx, key(i), []byte("new"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	copyDir(t, dir, dir2)
	s.Stop()

	open := func(dir string, p UnverifiedPolicy) *Cache {
		t.Helper()
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		c, err := Open(octx, opts(dir, p))
		if err != nil {
			t.Fatalf("Open with Redis down: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		t.Logf("Open with Redis down took %v", time.Since(start))
		return c
	}
	stale := open(dir, ServeStale)
	strict := open(dir2, Revalidate)
	for i := range keys {
		if v, ok, err := stale.Get(ctx, key(i)); err != nil || !ok || string(v) != "old" {
			t.Errorf("ServeStale Get(%s) with Redis down = %q, %v, %v; want the disk-warmed value", key(i), v, ok, err)
		}
		if v, ok, _ := strict.Get(ctx, key(i)); ok {
			t.Errorf("Revalidate Get(%s) with Redis down = %q; want nothing unverified served", key(i), v)
		}
	}
	if n := stale.Stats().Routes[0].StaleServes; n < keys {
		t.Errorf("StaleServes = %d, want >= %d", n, keys)
	}
	if n := strict.Stats().Routes[0].StaleServes; n != 0 {
		t.Errorf("Revalidate policy counted %d stale serves", n)
	}

	s.Restart()
	for _, c := range []*Cache{stale, strict} {
		waitFor(t, 30*time.Second, func() bool { return c.Stats().RevalidationPasses > 0 }, "a revalidation pass once Redis is back")
	}
	staleServes := stale.Stats().Routes[0].StaleServes
	for _, c := range []*Cache{stale, strict} {
		for i := range keys {
			want := "old"
			if i < changes {
				want = "new"
			}
			if v, ok, err := c.Get(ctx, key(i)); err != nil || !ok || string(v) != want {
				t.Errorf("Get(%s) with Redis back = %q, %v, %v; want %q", key(i), v, ok, err, want)
			}
		}
	}
	if n := stale.Stats().Routes[0].StaleServes; n != staleServes {
		t.Errorf("%d stale serves with Redis back", n-staleServes)
	}
}

// copyDir copies the regular files of src into dst (a closed store).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
