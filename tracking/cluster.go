package tracking

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Redis Cluster.
//
// Tracking is per node: a node sends invalidations only for writes it
// executes, and only to its own connections. rueidis opens one connection
// per node, lazily, and every connection's set-up sends CLIENT TRACKING ON
// BCAST with our prefixes, so a node's tracking is armed before any command
// of ours runs on it. What rueidis does not do, and this file adds:
//
//   - Arm every primary, not just the ones this process happened to talk to:
//     armPrimaries PINGs each primary's connection. It runs at start, after
//     every connection drop (rearmLoop), and on every topology check.
//   - Notice topology changes that close no connection: a coordinated
//     failover (the old primary becomes a replica, its connection stays
//     open), a slot moved between primaries (both connections stay open), a
//     partition that hides a failover. topologyLoop reads CLUSTER SLOTS every
//     TopologyInterval and bumps the epoch when the slot → primary map
//     changed, so entries served by a node that changed become unverified
//     (revalidated as after a reconnect), never silently trusted. The bump is
//     global, not per node: coarser than necessary, never wrong.
//
// A dropped connection to any node already bumps the epoch (rueidis calls
// OnInvalidations(nil)). Keys moved with MIGRATE are also deleted on the old
// primary, which invalidates them there.

// isCluster reports whether cl is a Redis Cluster client.
func isCluster(cl rueidis.Client) bool {
	return cl != nil && cl.Mode() == rueidis.ClientModeCluster
}

// topology is one reading of CLUSTER SLOTS.
type topology struct {
	digest    uint64   // of every slot range and its primary's node ID
	primaries []string // addresses, sorted
}

// readTopology asks one node for CLUSTER SLOTS: from, if it is a known
// node, else any node.
func readTopology(ctx context.Context, cl rueidis.Client, from string) (topology, error) {
	node := cl
	if from != "" {
		if n, ok := cl.Nodes()[from]; ok {
			node = n
		}
	}
	ranges, err := node.Do(ctx, node.B().ClusterSlots().Build()).ToArray()
	if err != nil {
		return topology{}, fmt.Errorf("tracking: cluster slots: %w", err)
	}
	type owner struct {
		lo, hi int64
		id     string
	}
	owners := make([]owner, 0, len(ranges))
	var primaries []string
	for _, r := range ranges {
		f, err := r.ToArray()
		if err != nil || len(f) < 3 {
			return topology{}, errors.New("tracking: cluster slots: malformed range")
		}
		lo, err1 := f[0].AsInt64()
		hi, err2 := f[1].AsInt64()
		p, err3 := f[2].ToArray()
		if err1 != nil || err2 != nil || err3 != nil || len(p) < 3 {
			return topology{}, errors.New("tracking: cluster slots: malformed range")
		}
		host, _ := p[0].ToString()
		port, _ := p[1].AsInt64()
		id, _ := p[2].ToString()
		owners = append(owners, owner{lo, hi, id})
		if host != "" {
			primaries = append(primaries, net.JoinHostPort(host, strconv.FormatInt(port, 10)))
		}
	}
	slices.SortFunc(owners, func(a, b owner) int { return int(a.lo - b.lo) })
	h := fnv.New64a()
	for _, o := range owners {
		fmt.Fprintf(h, "%d-%d=%s;", o.lo, o.hi, o.id)
	}
	slices.Sort(primaries)
	return topology{digest: h.Sum64(), primaries: slices.Compact(primaries)}, nil
}

// armPrimaries PINGs every primary of t on its own connection, so that
// connection exists and its set-up has sent CLIENT TRACKING. It returns the
// first error; the other primaries are still pinged.
func armPrimaries(ctx context.Context, cl rueidis.Client, t topology) error {
	nodes := cl.Nodes()
	var first error
	for _, addr := range t.primaries {
		n, ok := nodes[addr]
		if !ok {
			// rueidis has not learned this node yet; its periodic refresh
			// will, and the next check arms it.
			continue
		}
		if err := n.Do(ctx, n.B().Ping().Build()).Error(); err != nil && first == nil {
			first = fmt.Errorf("tracking: arm %s: %w", addr, err)
		}
	}
	return first
}

// ping re-arms tracking: on a single server one PING (rueidis dials and
// sends CLIENT TRACKING), on a cluster a PING to every primary.
func (c *Cache) ping(ctx context.Context) error {
	cl := c.redis()
	if !isCluster(cl) {
		return cl.Do(ctx, cl.B().Ping().Build()).Error()
	}
	t, err := readTopology(ctx, cl, "")
	if err != nil {
		return err
	}
	return armPrimaries(ctx, cl, t)
}

// startTopologyWatch starts topologyLoop when the client is a cluster
// client and the check is on. It runs on a goroutine that holds a c.wg
// count, so the Add cannot race with Close's Wait.
func (c *Cache) startTopologyWatch(ctx context.Context) {
	if c.cfg.TopologyInterval < 0 || !isCluster(c.redis()) {
		return
	}
	c.wg.Add(1)
	go c.topologyLoop(ctx)
}

// topologyLoop checks the cluster's topology every TopologyInterval: on a
// change of the slot → primary map it bumps the epoch (every entry becomes
// unverified) and notifies listeners; every round it arms every primary. It
// stops when ctx is cancelled (Close).
func (c *Cache) topologyLoop(ctx context.Context) {
	defer c.wg.Done()
	cl := c.redis()
	var last topology
	known := false
	tick := time.NewTicker(c.cfg.TopologyInterval)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.ConnWriteTimeout)
		from := ""
		if len(last.primaries) > 0 {
			from = last.primaries[0] // one node's view, so views do not flip-flop
		}
		t, err := readTopology(rctx, cl, from)
		if err == nil {
			if known && t.digest != last.digest {
				c.cfg.Logger.Info("tracking: cluster topology changed; entries unverified")
				c.topologyChanges.Add(1)
				c.bumpEpoch()
				c.notify(nil, true)
			}
			last, known = t, true
			err = armPrimaries(rctx, cl, t)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			c.cfg.Logger.Debug("tracking: cluster topology check", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
