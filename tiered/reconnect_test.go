package tiered

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestReconnectWithoutColdStart is issue 5's reconnect acceptance test. A
// cache's Redis connection is lost while readers run — its tracking
// connection killed with CLIENT KILL, or Redis restarted with persistence —
// and, while it cannot reconnect, another cache changes 100 keys and deletes
// 50. After it reconnects, no reader ever gets an old value of a changed
// key once the change was acknowledged; the 850 unchanged keys are
// revalidated, not reloaded, and keep hitting memory; exactly the 150
// changed keys are dropped.
func TestReconnectWithoutColdStart(t *testing.T) {
	for _, tt := range []struct {
		name string
		cut  func(t *testing.T, s *redistest.Server, adm *admin)
	}{
		{"client kill", func(t *testing.T, s *redistest.Server, adm *admin) {
			if n := adm.cutUser("a"); n == 0 {
				t.Fatal("CLIENT KILL found no tracking connection of the cache")
			}
		}},
		{"redis restart", func(t *testing.T, s *redistest.Server, adm *admin) {
			s.Restart() // ACL users are not persisted: user a is gone
		}},
	} {
		t.Run(tt.name, func(t *testing.T) { testReconnect(t, tt.cut) })
	}
}

func testReconnect(t *testing.T, cut func(*testing.T, *redistest.Server, *admin)) {
	const (
		keys    = 1000
		changes = 100
		deletes = 50
	)
	s := redistest.Start(t, &redistest.Options{Persist: true})
	adm := newAdmin(t, s)
	adm.addUser("a")
	ctx := context.Background()
	routes := []Route{{Prefix: "rc:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}
	a := openT(t, &Options{Redis: userOpts(s, "a"), Routes: routes, Logger: quietLog})
	w := openT(t, &Options{Redis: redisOpts(s), Routes: routes, Logger: quietLog})
	key := func(i int) string { return fmt.Sprintf("rc:%04d", i) }
	for i := range keys {
		if err := a.Set(ctx, key(i), []byte("old:"+key(i)), 0); err != nil {
			t.Fatal(err)
		}
	}

	// acked[i] is set once a change of key i is acknowledged; from then on
	// no read of a may return the old value.
	var acked [keys]atomic.Bool
	var violations, reads atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer halt()
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(keys)
				changed := acked[i].Load()
				v, ok, err := a.Get(ctx, key(i))
				reads.Add(1)
				if err == nil && ok && changed && bytes.Equal(v, []byte("old:"+key(i))) {
					violations.Add(1)
					t.Errorf("%s: old value served after its change was acknowledged", key(i))
				}
			}
		}()
	}

	bumps := a.Stats().EpochBumps
	cut(t, s, adm)
	waitFor(t, 10*time.Second, func() bool { return a.Stats().EpochBumps > bumps }, "the cache to notice the lost connection")

	// While a is out: change and delete keys through w.
	perm := rand.New(rand.NewPCG(3, 4)).Perm(keys)
	changed := make(map[string]string)
	retry := func(what string, f func() error) {
		deadline := time.Now().Add(10 * time.Second)
		for err := f(); err != nil; err = f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for n, i := range perm[:changes+deletes] {
		k := key(i)
		if n < changes {
			retry("w.Set", func() error { return w.Set(ctx, k, []byte("new:"+k), 0) })
			changed[k] = "new:" + k
		} else {
			retry("w.Delete", func() error { return w.Delete(ctx, k) })
			changed[k] = ""
		}
		acked[i].Store(true)
	}
	before := a.Stats()

	// Every key a drops from here on, for whatever reason, is recorded:
	// it must be exactly the changed ones (an unchanged key dropped would be
	// a cold start for it).
	var droppedMu sync.Mutex
	dropped := make(map[string]bool)
	a.mem.OnInvalidate(func(keys []string, epochBump bool) {
		droppedMu.Lock()
		for _, k := range keys {
			dropped[k] = true
		}
		droppedMu.Unlock()
	})

	// Let a back in; it reconnects and revalidates in the background. The
	// re-arm bumps the epoch once more (whatever was filled while tracking
	// was down is checked too), and no revalidation is accepted before it:
	// the pass that counts is the one after it.
	adm.addUser("a")
	waitFor(t, 30*time.Second, func() bool {
		st := a.Stats()
		return st.RevalidationPasses > before.RevalidationPasses && st.EpochBumps > before.EpochBumps
	}, "a revalidation pass after the reconnect")
	halt()

	st := a.Stats()
	rs := st.Routes[0]
	t.Logf("reads during the run %d; after reconnect: memory entries %d (of %d), revalidated %d (background %d), dropped %d (background %d), pass %v",
		reads.Load(), st.MemoryEntries, keys, rs.Revalidated, st.Revalidated, rs.Dropped, st.Dropped, st.LastRevalidation)
	droppedMu.Lock()
	for k := range changed {
		if !dropped[k] {
			t.Errorf("changed %s was not dropped", k)
		}
	}
	for k := range dropped {
		if _, ok := changed[k]; !ok {
			t.Errorf("unchanged %s was dropped", k)
		}
	}
	droppedMu.Unlock()
	// Readers and the background pass may both check (and count) a key.
	if rs.Dropped < int64(len(changed)) {
		t.Errorf("Dropped = %d, want >= %d (the changed keys)", rs.Dropped, len(changed))
	}
	if rs.Revalidated < keys-int64(len(changed)) {
		t.Errorf("Revalidated = %d, want >= %d (the unchanged keys)", rs.Revalidated, keys-len(changed))
	}
	if st.MemoryEntries < keys-len(changed) {
		t.Errorf("memory holds %d entries after the reconnect, want >= %d: a cold start", st.MemoryEntries, keys-len(changed))
	}

	// Unchanged keys hit memory without the loader; changed keys are new.
	l := &countingLoader{}
	hits := rs.MemoryHits
	unchanged := 0
	for i := range keys {
		k := key(i)
		det := &Sources{}
		v, ok, err := a.GetOrLoad(WithSources(ctx, det), k, l)
		want, isChanged := changed[k]
		src, _ := det.Source(k)
		switch {
		case err != nil:
			t.Errorf("GetOrLoad(%s): %v", k, err)
		case !isChanged && (!ok || string(v) != "old:"+k || src != SourceMemory):
			t.Errorf("unchanged %s = %q, %v from %v; want its value from memory", k, v, ok, src)
		case isChanged && want != "" && string(v) != want:
			t.Errorf("changed %s = %q, want %q", k, v, want)
		}
		if !isChanged {
			unchanged++
		}
	}
	if n := a.Stats().Routes[0].MemoryHits - hits; n < int64(unchanged) {
		t.Errorf("memory hits after the reconnect = %d, want >= %d", n, unchanged)
	}
	if n := l.calls.Load(); n != deletes {
		t.Errorf("loader calls = %d, want %d (only the deleted keys)", n, deletes)
	}
	if v := violations.Load(); v > 0 {
		t.Errorf("%d reads served an old value", v)
	}
}
