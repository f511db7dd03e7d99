package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redisproc"
)

// Cluster defaults, used for zero ClusterOptions fields.
const (
	// DefaultClusterPrimaries is the number of primaries when
	// ClusterOptions.Primaries is zero.
	DefaultClusterPrimaries = redisproc.DefaultClusterPrimaries
	// DefaultClusterNodeTimeout is cluster-node-timeout when
	// ClusterOptions.NodeTimeout is zero: small, so that a killed primary is
	// replaced within a few seconds.
	DefaultClusterNodeTimeout = redisproc.DefaultClusterNodeTimeout
	// clusterWait bounds every wait for the cluster to settle.
	clusterWait = 30 * time.Second
)

// ClusterOptions configures a local Redis Cluster. A nil *ClusterOptions is
// valid: three primaries without replicas.
type ClusterOptions struct {
	// Primaries is the number of primaries, each owning an equal share of
	// the 16384 slots. Zero means DefaultClusterPrimaries; redis-cli needs
	// at least 3.
	Primaries int
	// Replicas is the number of replicas per primary. Zero means none.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a node may be
	// unreachable before it is failed and its replica promoted. Zero means
	// DefaultClusterNodeTimeout.
	NodeTimeout time.Duration
	// Persist turns on the append-only file on every node, as
	// Options.Persist does.
	Persist bool
	// Args are extra redis-server arguments for every node.
	Args []string
}

// Cluster is a local Redis Cluster owned by a test: every node a private
// redis-server on loopback with --cluster-enabled yes, in its own directory
// (nodes.conf there), joined with redis-cli --cluster create. Every node is
// killed in t.Cleanup.
//
// Its methods wait for the cluster to settle and fail the test (t.Fatal) when
// it does not within 30 s, so call them from the test's goroutine.
type Cluster struct {
	tb testing.TB
	// Nodes are every node, in start order: primaries first (Nodes[i] for
	// i < Primaries at creation), then replicas. Roles change with failovers;
	// Primaries and Replicas report the current ones.
	Nodes []*ClusterNode
}

// ClusterNode is one node of a Cluster. It has every Server method (Kill,
// Restart, Pause, Resume, Addr, Do, CLI); Restart brings it back with its
// nodes.conf, so it rejoins the cluster (as a replica if it was failed over).
type ClusterNode struct {
	*Server
	id string
}

// ID returns the node's cluster node ID.
func (n *ClusterNode) ID() string { return n.id }

// StartCluster starts a cluster and returns once every node agrees on the
// slot map, cluster_state is ok everywhere and every replica is in sync.
// The nodes are started and joined by redisproc.StartCluster, each in its
// own tb.TempDir.
func StartCluster(tb testing.TB, opts *ClusterOptions) *Cluster {
	tb.Helper()
	var o ClusterOptions
	if opts != nil {
		o = *opts
		o.Args = append([]string(nil), opts.Args...)
	}
	if o.Primaries == 0 {
		o.Primaries = DefaultClusterPrimaries
	}
	if o.Primaries < 3 || o.Replicas < 0 {
		tb.Fatalf("redistest: cluster of %d primaries and %d replicas each: need >= 3 primaries, >= 0 replicas", o.Primaries, o.Replicas)
	}
	bin := Binary(tb)
	cli := cliBinary(tb)
	n := o.Primaries * (1 + o.Replicas)
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = tb.TempDir()
	}
	pc, err := redisproc.StartCluster(context.Background(), &redisproc.ClusterOptions{
		Primaries: o.Primaries, Replicas: o.Replicas, NodeTimeout: o.NodeTimeout, Persist: o.Persist,
		Args: o.Args, Binary: bin, CLI: cli, Dirs: dirs, StartTimeout: clusterWait})
	if err != nil {
		tb.Fatalf("redistest: start cluster: %v", err)
	}
	// Registered after the TempDirs' cleanups, so it runs before they are
	// removed.
	tb.Cleanup(func() { pc.Close() })
	c := &Cluster{tb: tb}
	for _, p := range pc.Nodes() {
		nd := &ClusterNode{Server: &Server{tb: tb, p: p}}
		id, err := nd.Do("CLUSTER", "MYID")
		if err != nil {
			tb.Fatalf("redistest: CLUSTER MYID on %s: %v", nd.Addr(), err)
		}
		nd.id = id
		c.Nodes = append(c.Nodes, nd)
	}
	c.WaitOK()
	return c
}

// cliBinary returns redis-cli's path or fails tb.
func cliBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redis-cli not found on PATH: install the Debian package redis-tools")
	}
	return bin
}

// Addrs returns every node's address, for rueidis's InitAddress.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr()
	}
	return a
}

// nodeByID returns the node with id, or nil.
func (c *Cluster) nodeByID(id string) *ClusterNode {
	for _, n := range c.Nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// nodeLine is one line of CLUSTER NODES.
type nodeLine struct {
	id, master string
	flags      []string
	slots      [][2]int // inclusive ranges, migration markers left out
}

func (l nodeLine) has(flag string) bool { return slices.Contains(l.flags, flag) }

// clusterNodes returns n's view of the cluster.
func clusterNodes(n *ClusterNode) ([]nodeLine, error) {
	out, err := n.Do("CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var lines []nodeLine
	for s := range strings.Lines(out) {
		f := strings.Fields(s)
		if len(f) < 8 {
			continue
		}
		l := nodeLine{id: f[0], flags: strings.Split(f[2], ","), master: f[3]}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			lo, hi, found := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad slot range %q in CLUSTER NODES", r)
			}
			l.slots = append(l.slots, [2]int{a, b})
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// view is the agreed state of the cluster.
type view struct {
	lines map[string]nodeLine // by node ID
}

// settled returns the cluster's state if every running node reports
// cluster_state:ok, every running node agrees on who owns which slots and
// which nodes are primaries, every owner is running, and every running
// replica's link to its primary is up. Otherwise it returns why not.
func (c *Cluster) settled() (*view, error) {
	var first []nodeLine
	var firstAddr string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		info, err := n.Do("CLUSTER", "INFO")
		if err != nil {
			return nil, fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return nil, fmt.Errorf("%s: cluster_state is not ok", n.Addr())
		}
		lines, err := clusterNodes(n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Addr(), err)
		}
		lines = slices.DeleteFunc(lines, func(l nodeLine) bool {
			nd := c.nodeByID(l.id)
			return nd == nil || !nd.Running()
		})
		for i := range lines {
			lines[i].flags = slices.DeleteFunc(lines[i].flags, func(f string) bool { return f == "myself" })
			if lines[i].has("fail") || lines[i].has("fail?") {
				return nil, fmt.Errorf("%s: sees running node %s as failing", n.Addr(), lines[i].id)
			}
		}
		slices.SortFunc(lines, func(a, b nodeLine) int { return strings.Compare(a.id, b.id) })
		if first == nil {
			first, firstAddr = lines, n.Addr()
		} else if !sameView(first, lines) {
			return nil, fmt.Errorf("%s and %s disagree on the cluster's layout", firstAddr, n.Addr())
		}
		if repl := infoOf(n, "replication"); strings.Contains(repl, "role:slave") &&
			!strings.Contains(repl, "master_link_status:up") {
			return nil, fmt.Errorf("%s: replica not in sync with its primary", n.Addr())
		}
	}
	if first == nil {
		return nil, errors.New("no node is running")
	}
	covered := 0
	v := &view{lines: map[string]nodeLine{}}
	for _, l := range first {
		v.lines[l.id] = l
		for _, r := range l.slots {
			covered += r[1] - r[0] + 1
		}
	}
	if covered != 16384 {
		return nil, fmt.Errorf("running primaries cover %d of 16384 slots", covered)
	}
	return v, nil
}

func sameView(a, b []nodeLine) bool {
	return slices.EqualFunc(a, b, func(x, y nodeLine) bool {
		return x.id == y.id && x.master == y.master && slices.Equal(x.slots, y.slots) &&
			x.has("master") == y.has("master")
	})
}

// infoOf returns n's INFO section, or "" if it does not answer.
func infoOf(n *ClusterNode, section string) string {
	s, _ := n.Do("INFO", section)
	return s
}

// wait returns the settled view once cond accepts it, failing the test
// after clusterWait.
func (c *Cluster) wait(what string, cond func(*view) error) *view {
	c.tb.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		v, err := c.settled()
		if err == nil && cond != nil {
			err = cond(v)
		}
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("redistest: cluster: timed out after %v waiting for %s: %v", clusterWait, what, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the servers
	}
}

// WaitOK waits until every running node reports cluster_state:ok and agrees
// with every other on the slot map and the roles, and every replica is in
// sync with its primary.
func (c *Cluster) WaitOK() {
	c.tb.Helper()
	c.wait("the cluster to settle", nil)
}

// Primaries returns the running primaries that own slots, in Nodes order,
// once the cluster has settled.
func (c *Cluster) Primaries() []*ClusterNode {
	c.tb.Helper()
	v := c.wait("the cluster to settle", nil)
	var ps []*ClusterNode
	for _, n := range c.Nodes {
		if l, ok := v.lines[n.id]; ok && l.has("master") && len(l.slots) > 0 {
			ps = append(ps, n)
		}
	}
	return ps
}

// Replicas returns the running replicas of primary, once the cluster has
// settled.
func (c *Cluster) Replicas(primary *ClusterNode) []*ClusterNode {
	c.tb.Helper()
	v := c.wait("the cluster to settle", nil)
	var rs []*ClusterNode
	for _, n := range c.Nodes {
		if l, ok := v.lines[n.id]; ok && l.has("slave") && l.master == primary.id {
			rs = append(rs, n)
		}
	}
	return rs
}

// SlotOwner returns the primary that owns slot, once the cluster has
// settled.
func (c *Cluster) SlotOwner(slot uint16) *ClusterNode {
	c.tb.Helper()
	v := c.wait("the cluster to settle", nil)
	for id, l := range v.lines {
		for _, r := range l.slots {
			if int(slot) >= r[0] && int(slot) <= r[1] {
				return c.nodeByID(id)
			}
		}
	}
	c.tb.Fatalf("redistest: cluster: nobody owns slot %d", slot)
	return nil
}

// Failover runs CLUSTER FAILOVER on replica (a coordinated, lossless
// switch) and waits until every node sees it as the primary of its old
// primary's slots and the cluster has settled. It returns the old primary,
// now a replica of replica.
func (c *Cluster) Failover(replica *ClusterNode) *ClusterNode {
	c.tb.Helper()
	lines, err := clusterNodes(replica)
	if err != nil {
		c.tb.Fatalf("redistest: cluster failover: %v", err)
	}
	var old *ClusterNode
	for _, l := range lines {
		if l.id == replica.id && l.has("slave") {
			old = c.nodeByID(l.master)
		}
	}
	if old == nil {
		c.tb.Fatalf("redistest: cluster failover: %s is not a replica", replica.Addr())
	}
	if _, err := replica.Do("CLUSTER", "FAILOVER"); err != nil {
		c.tb.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	c.wait("the failover to "+replica.Addr(), func(v *view) error {
		if l := v.lines[replica.id]; !l.has("master") || len(l.slots) == 0 {
			return fmt.Errorf("%s is not a primary yet", replica.Addr())
		}
		if l := v.lines[old.id]; l.master != replica.id {
			return fmt.Errorf("%s is not a replica of %s yet", old.Addr(), replica.Addr())
		}
		return nil
	})
	return old
}

// KillPrimary kills primary with SIGKILL and waits until one of its
// replicas has been promoted by the cluster (after NodeTimeout) and the
// cluster has settled again. It returns the promoted replica. primary must
// have a replica.
func (c *Cluster) KillPrimary(primary *ClusterNode) *ClusterNode {
	c.tb.Helper()
	reps := c.Replicas(primary)
	if len(reps) == 0 {
		c.tb.Fatalf("redistest: cluster: %s has no replica to promote", primary.Addr())
	}
	primary.Kill()
	var promoted *ClusterNode
	c.wait("a replica of the killed "+primary.Addr()+" to be promoted", func(v *view) error {
		for _, r := range reps {
			if l, ok := v.lines[r.id]; ok && l.has("master") && len(l.slots) > 0 {
				promoted = r
				return nil
			}
		}
		return errors.New("no replica promoted yet")
	})
	return promoted
}

// MoveSlot moves slot and its keys from primary from to primary to, as
// documented for resharding: CLUSTER SETSLOT IMPORTING on to, MIGRATING on
// from, MIGRATE the keys in batches, then SETSLOT NODE on to, from and every
// other primary. It waits until every node agrees and returns the number of
// keys moved. Clients see ASK redirections during the move and MOVED after
// it.
func (c *Cluster) MoveSlot(slot uint16, from, to *ClusterNode) int {
	c.tb.Helper()
	s := strconv.Itoa(int(slot))
	must := func(n *ClusterNode, args ...string) {
		c.tb.Helper()
		if _, err := n.Do(args...); err != nil {
			c.tb.Fatalf("redistest: move slot %d: %s on %s: %v", slot, strings.Join(args, " "), n.Addr(), err)
		}
	}
	must(to, "CLUSTER", "SETSLOT", s, "IMPORTING", from.id)
	must(from, "CLUSTER", "SETSLOT", s, "MIGRATING", to.id)
	moved := 0
	for {
		keys, err := from.command("CLUSTER", "GETKEYSINSLOT", s, "100")
		if err != nil {
			c.tb.Fatalf("redistest: move slot %d: CLUSTER GETKEYSINSLOT on %s: %v", slot, from.Addr(), err)
		}
		ks, _ := keys.([]any)
		if len(ks) == 0 {
			break
		}
		args := []string{"MIGRATE", "127.0.0.1", strconv.Itoa(to.Port()), "", "0", "5000", "REPLACE"}
		if pw := from.p.Password(); pw != "" {
			args = append(args, "AUTH", pw)
		}
		args = append(args, "KEYS")
		for _, k := range ks {
			args = append(args, fmt.Sprint(k))
		}
		must(from, args...)
		moved += len(ks)
	}
	must(to, "CLUSTER", "SETSLOT", s, "NODE", to.id)
	must(from, "CLUSTER", "SETSLOT", s, "NODE", to.id)
	for _, p := range c.runningPrimaries() {
		if p != to && p != from {
			must(p, "CLUSTER", "SETSLOT", s, "NODE", to.id)
		}
	}
	c.wait(fmt.Sprintf("slot %d to move to %s", slot, to.Addr()), func(v *view) error {
		for _, r := range v.lines[to.id].slots {
			if int(slot) >= r[0] && int(slot) <= r[1] {
				return nil
			}
		}
		return fmt.Errorf("slot %d not owned by %s everywhere", slot, to.Addr())
	})
	return moved
}

// runningPrimaries returns the running nodes that report themselves
// primary, without waiting for the cluster to settle.
func (c *Cluster) runningPrimaries() []*ClusterNode {
	var ps []*ClusterNode
	for _, n := range c.Nodes {
		if n.Running() && strings.Contains(infoOf(n, "replication"), "role:master") {
			ps = append(ps, n)
		}
	}
	return ps
}

// SlotMap returns, once the cluster has settled, the owner of every slot:
// SlotMap()[slot] is the primary serving it.
func (c *Cluster) SlotMap() []*ClusterNode {
	c.tb.Helper()
	v := c.wait("the cluster to settle", nil)
	m := make([]*ClusterNode, 16384)
	for id, l := range v.lines {
		for _, r := range l.slots {
			for s := r[0]; s <= r[1]; s++ {
				m[s] = c.nodeByID(id)
			}
		}
	}
	return m
}
