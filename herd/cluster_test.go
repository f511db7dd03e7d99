package herd

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/keyslot"
	"github.com/thermoscache/thermos/internal/redistest"
)

// Tests on a local Redis Cluster (three primaries): the clients are given one
// node's address and rueidis detects the cluster; lock keys and channels
// carry the data key's hash tag, so every script and transaction touches one
// slot.

// TestClusterStampedeProcesses is TestStampedeProcesses on a cluster: 4
// processes x 64 goroutines on one cold key call the origin once per round.
// The rounds' keys fall on different shards.
func TestClusterStampedeProcesses(t *testing.T) {
	const procs, per, reps = 4, 64, 6
	cl := redistest.StartCluster(t, nil)
	addr := cl.Nodes[0].Addr()
	c := newClient(t, addr)
	slots := cl.SlotMap()
	shards := map[string]bool{}
	for rep := range reps {
		shards[slots[keyslot.Of("cold:"+strconv.Itoa(rep))].Addr()] = true
	}
	calls := runStampede(t, addr, c, modeStampede, procs, per, reps)
	for rep, n := range calls {
		if n != 1 {
			t.Errorf("round %d: origin calls = %d, want 1", rep, n)
		}
	}
	t.Logf("origin calls per cold key on a cluster (%d shards hit), %d processes x %d goroutines: %v", len(shards), procs, per, calls)
}

// TestClusterLockKeysShareTheDataSlot asks the cluster itself: every lock
// key and channel lives in its data key's slot, for keys with and without
// hash tags.
func TestClusterLockKeysShareTheDataSlot(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	g := newGroup(t, &Options{Client: newClient(t, cl.Nodes[0].Addr()), Logger: slog.New(slog.DiscardHandler)})
	for _, key := range []string{"user:42", "user:{42}:name", "a}b", "{}x", "plain"} {
		k := g.keysFor(key)
		want, err := cl.Nodes[0].Do("CLUSTER", "KEYSLOT", key)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{k.lock, k.channel} {
			if got, _ := cl.Nodes[0].Do("CLUSTER", "KEYSLOT", name); got != want {
				t.Errorf("slot(%q) = %s, slot of data key %q = %s", name, got, key, want)
			}
		}
	}
}

// TestClusterFencedWrite is TestFencedWriteRefusedAfterLeaseLoss on a
// cluster, with scripts and with WATCH/MULTI transactions (a dedicated
// connection that must stay on one slot): a holder whose lease ran out and
// was taken cannot overwrite the newer value.
func TestClusterFencedWrite(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			f := &fleet{t: t, srv: cl.Nodes[0].Server, c: newClient(t, cl.Nodes[0].Addr()), v: v}
			const lease = 100 * time.Millisecond
			key := "fenced:" + v.name
			paused := f.group(Options{LeaseTTL: lease})
			paused.renewHook = func() bool { return false }
			// Only the paused holder's lease must run out (see lease_test.go).
			next := f.group(Options{LeaseTTL: 10 * time.Second})
			lockKey := paused.keysFor(key).lock

			var old counter
			release := make(chan struct{})
			oldDone := make(chan Result, 1)
			go func() {
				r, err := paused.Do(context.Background(), key, nil, old.load("old", time.Minute, release))
				if err != nil {
					t.Errorf("paused holder: %v", err)
				}
				oldDone <- r
			}()
			waitFor(t, "the paused holder to load", 10*time.Second, func() bool { return old.calls.Load() == 1 })
			waitFor(t, "the paused holder's lease to expire", 10*time.Second, func() bool {
				_, held := redisGet(t, f.c, lockKey)
				return !held
			})
			var fresh counter
			r, err := next.Do(context.Background(), key, nil, fresh.load("new", time.Minute, nil))
			if err != nil || !r.Stored {
				t.Fatalf("next holder: %+v, %v; want a stored value", r, err)
			}
			close(release)
			r = <-oldDone
			if r.Stored || string(r.Value) != "old" {
				t.Errorf("paused holder result = %+v, want its value, not stored", r)
			}
			if v, _ := redisGet(t, f.c, key); v != "new" {
				t.Errorf("redis value = %q, want new", v)
			}
			if s := paused.Stats(); s.FencedWritesRefused != 1 || s.LockLosses != 1 {
				t.Errorf("paused holder stats: refused=%d losses=%d, want 1 and 1", s.FencedWritesRefused, s.LockLosses)
			}
			if _, held := redisGet(t, f.c, lockKey); held {
				t.Errorf("lock still held after both holders finished")
			}
		})
	}
}

// TestClusterHolderDeath is TestHolderDeath on a cluster: the holder process
// is SIGKILLed in its load; a waiter here takes over within lease + 1 s,
// and the origin is called twice in all.
func TestClusterHolderDeath(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	addr := cl.Nodes[1].Addr()
	_, took, lease := holderDeath(t, addr, newClient(t, addr))
	t.Logf("take-over %v after SIGKILL on a cluster (lease %v)", took, lease)
}
