package redistest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/keyslot"
)

// keyOn returns a key "prefix<n>" whose slot owner is node, per c.
func keyOn(t *testing.T, c *Cluster, prefix string, node *ClusterNode) string {
	t.Helper()
	for i := range 10000 {
		k := fmt.Sprint(prefix, i)
		if c.SlotOwner(keyslot.Of(k)) == node {
			return k
		}
	}
	t.Fatalf("no key of prefix %q on %s", prefix, node.Addr())
	return ""
}

func TestClusterStartMoveSlotKill(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, &ClusterOptions{Replicas: 1})
	t.Logf("3 primaries + 3 replicas ready in %v", time.Since(start))
	if len(c.Nodes) != 6 || len(c.Addrs()) != 6 {
		t.Fatalf("nodes = %d, addrs = %d, want 6", len(c.Nodes), len(c.Addrs()))
	}
	ps := c.Primaries()
	if len(ps) != 3 {
		t.Fatalf("primaries = %d, want 3", len(ps))
	}
	for _, p := range ps {
		if rs := c.Replicas(p); len(rs) != 1 {
			t.Fatalf("%s has %d replicas, want 1", p.Addr(), len(rs))
		}
		if p.ID() == "" {
			t.Fatalf("%s has no node ID", p.Addr())
		}
	}

	// A key on the first primary, written there; a wrong node answers MOVED.
	k := keyOn(t, c, "k", ps[0])
	if _, err := ps[0].Do("SET", k, "v"); err != nil {
		t.Fatalf("SET on owner: %v", err)
	}
	if _, err := ps[1].Do("GET", k); err == nil || !strings.HasPrefix(err.Error(), "MOVED") {
		t.Fatalf("GET on a non-owner: err = %v, want MOVED", err)
	}

	// Move its slot, with the key, to the second primary.
	slot := keyslot.Of(k)
	if n := c.MoveSlot(slot, ps[0], ps[1]); n != 1 {
		t.Errorf("MoveSlot moved %d keys, want 1", n)
	}
	if o := c.SlotOwner(slot); o != ps[1] {
		t.Fatalf("slot %d owner = %s, want %s", slot, o.Addr(), ps[1].Addr())
	}
	if got, err := ps[1].Do("GET", k); err != nil || got != "v" {
		t.Fatalf("GET %s on the new owner = %q, %v; want v", k, got, err)
	}

	// Coordinated failover of the third primary's replica.
	r := c.Replicas(ps[2])[0]
	if old := c.Failover(r); old != ps[2] {
		t.Errorf("Failover returned %s, want the old primary %s", old.Addr(), ps[2].Addr())
	}
	if rs := c.Replicas(r); len(rs) != 1 || rs[0] != ps[2] {
		t.Errorf("after failover, replicas of %s = %v, want the old primary", r.Addr(), rs)
	}

	// Kill the second primary (which now holds k): its replica takes over
	// the slots, with the key (replicated before the kill).
	if _, err := ps[1].Do("WAIT", "1", "5000"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	promoted := c.KillPrimary(ps[1])
	t.Logf("replica promoted %v after SIGKILL", time.Since(killed))
	if o := c.SlotOwner(slot); o != promoted {
		t.Fatalf("slot %d owner = %s after the kill, want the promoted %s", slot, o.Addr(), promoted.Addr())
	}
	if got, err := promoted.Do("GET", k); err != nil || got != "v" {
		t.Fatalf("GET %s on the promoted replica = %q, %v; want v", k, got, err)
	}

	// The killed node comes back as a replica.
	ps[1].Restart()
	c.WaitOK()
	if rs := c.Replicas(promoted); len(rs) != 1 || rs[0] != ps[1] {
		t.Errorf("restarted node is not a replica of the promoted one")
	}
}

func TestClusterNoReplicas(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, nil)
	t.Logf("3 primaries ready in %v", time.Since(start))
	if len(c.Nodes) != 3 || len(c.Primaries()) != 3 {
		t.Fatalf("nodes = %d, primaries = %d, want 3 and 3", len(c.Nodes), len(c.Primaries()))
	}
}
