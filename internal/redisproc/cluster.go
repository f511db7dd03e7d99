package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cluster defaults, used for zero ClusterOptions fields.
const (
	// DefaultClusterPrimaries is the number of primaries when
	// ClusterOptions.Primaries is zero; redis-cli needs at least 3.
	DefaultClusterPrimaries = 3
	// DefaultClusterNodeTimeout is cluster-node-timeout when
	// ClusterOptions.NodeTimeout is zero: small, so that a killed primary is
	// replaced within a few seconds.
	DefaultClusterNodeTimeout = time.Second
	// MaxClusterPort is the highest port a cluster node is given, so that
	// its cluster bus port (port+10000) is a valid port too.
	MaxClusterPort = 65535 - 10000
)

// ErrCLINotFound is returned by StartCluster when redis-cli is not on PATH.
// Test for it with errors.Is(err, redisproc.ErrCLINotFound).
var ErrCLINotFound = errors.New("redisproc: redis-cli not found on PATH (install the Debian package redis-tools)")

// ErrClusterOptions is returned by StartCluster for options it cannot use,
// such as fewer than 3 primaries.
var ErrClusterOptions = errors.New("redisproc: bad cluster options")

// ClusterOptions configures a local Redis Cluster. A nil *ClusterOptions is
// valid: three primaries without replicas.
type ClusterOptions struct {
	// Primaries is the number of primaries, each owning an equal share of
	// the 16384 slots. Zero means DefaultClusterPrimaries; at least 3.
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
	// Args are extra redis-server arguments for every node. A
	// "--requirepass", "pw" pair is also given to redis-cli (through its
	// environment, not its command line).
	Args []string
	// Binary is the redis-server executable. Empty means the one on PATH.
	Binary string
	// CLI is the redis-cli executable. Empty means the one on PATH.
	CLI string
	// Dirs are the nodes' working directories, one per node (Primaries ×
	// (1+Replicas)), owned by the caller. Nil means a new temporary
	// directory per node, removed by Close.
	Dirs []string
	// StartTimeout bounds each node's start and, separately, the wait for
	// every node to report cluster_state:ok. Zero means DefaultStartTimeout.
	StartTimeout time.Duration

	// pick, if set, is asked for each node's port before the picker: tests
	// hand out taken ports with it. It returns 0 to leave the choice to
	// the picker.
	pick func() (int, error)
}

// Cluster is a local Redis Cluster: every node a private redis-server on
// loopback with --cluster-enabled yes, in its own directory (nodes.conf
// there), joined with redis-cli --cluster create. Its methods are safe for
// concurrent use.
type Cluster struct {
	nodes  []*Server
	closed sync.Once
}

// StartCluster starts Primaries × (1+Replicas) nodes on free loopback ports
// whose bus ports (port+10000) were free too, each checked to be the
// process it started (see Start; a node whose port or bus port was taken
// meanwhile is started again on other ports), joins them with redis-cli
// --cluster create, and returns once every node reports cluster_state:ok.
// On error every node it started is gone. Errors: ErrNotFound,
// ErrCLINotFound, ErrClusterOptions, a node that does not start, a cluster
// that does not settle within the start timeout, or ctx's error.
func StartCluster(ctx context.Context, opts *ClusterOptions) (*Cluster, error) {
	var o ClusterOptions
	if opts != nil {
		o = *opts
		o.Args = append([]string(nil), opts.Args...)
		o.Dirs = append([]string(nil), opts.Dirs...)
	}
	if o.Primaries == 0 {
		o.Primaries = DefaultClusterPrimaries
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = DefaultClusterNodeTimeout
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	n := o.Primaries * (1 + o.Replicas)
	switch {
	case o.Primaries < 3 || o.Replicas < 0:
		return nil, fmt.Errorf("%w: %d primaries and %d replicas each: need >= 3 primaries, >= 0 replicas", ErrClusterOptions, o.Primaries, o.Replicas)
	case o.Dirs != nil && len(o.Dirs) != n:
		return nil, fmt.Errorf("%w: %d directories for %d nodes", ErrClusterOptions, len(o.Dirs), n)
	}
	if o.Binary == "" {
		bin, err := Binary()
		if err != nil {
			return nil, err
		}
		o.Binary = bin
	}
	if o.CLI == "" {
		cli, err := exec.LookPath("redis-cli")
		if err != nil {
			return nil, ErrCLINotFound
		}
		o.CLI = cli
	}
	args := append([]string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10),
		// Promote a replica however long it was cut off from its primary.
		"--cluster-replica-validity-factor", "0",
		// Full syncs at once: the default waits 5 s for more replicas.
		"--repl-diskless-sync-delay", "0",
	}, o.Args...)

	c := &Cluster{nodes: make([]*Server, n)}
	ports := newPortPicker()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var dir string
			if o.Dirs != nil {
				dir = o.Dirs[i]
			}
			var err error
			for range startAttempts { // a picked port can be taken before redis binds it
				port := 0
				if o.pick != nil {
					if port, err = o.pick(); err != nil {
						continue
					}
				}
				if port == 0 {
					if port, err = ports.pick(); err != nil {
						continue
					}
				}
				var s *Server
				s, err = Start(ctx, &Options{Binary: o.Binary, Dir: dir, Port: port, Persist: o.Persist,
					Args: args, StartTimeout: o.StartTimeout})
				if err == nil {
					reserve(port + 10000) // Close releases it
					c.nodes[i] = s
					return
				}
				if ctx.Err() != nil {
					break
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	fail := func(err error) (*Cluster, error) {
		c.Close()
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return fail(fmt.Errorf("redisproc: start cluster node: %w", err))
	}
	create := []string{"--cluster", "create"}
	create = append(create, c.Addrs()...)
	create = append(create, "--cluster-replicas", strconv.Itoa(o.Replicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, o.CLI, create...)
	cmd.Env = os.Environ()
	if pw := c.nodes[0].Password(); pw != "" {
		// In the environment, not the arguments: ps shows arguments.
		cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+pw)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("redisproc: redis-cli --cluster create: %w: %s", err, lastLines(string(out), 5)))
	}
	if err := c.waitOK(ctx, o.StartTimeout); err != nil {
		return fail(err)
	}
	return c, nil
}

// waitOK polls every node until all report cluster_state:ok.
func (c *Cluster) waitOK(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.notOK()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("redisproc: cluster: %w (%v)", ctx.Err(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: cluster not ok within %v: %w", timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the servers
	}
}

// notOK returns why some node does not report cluster_state:ok, or nil.
func (c *Cluster) notOK() error {
	for _, s := range c.nodes {
		info, err := s.Do("CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", s.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", s.Addr())
		}
	}
	return nil
}

// Nodes returns every node, in start order: primaries first (as created),
// then replicas. The slice is a copy; the servers are the cluster's.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns every node's address, for a client's list of initial
// addresses.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		a[i] = s.Addr()
	}
	return a
}

// Close kills every node and removes the directories StartCluster created.
// It is safe to call twice.
func (c *Cluster) Close() error {
	var errs []error
	for _, s := range c.nodes {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	c.closed.Do(func() {
		for _, s := range c.nodes {
			if s != nil {
				release(s.Port() + 10000)
			}
		}
	})
	return errors.Join(errs...)
}

// lastLines returns the last n lines of s, joined by " | ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// portPicker hands out distinct ports up to MaxClusterPort whose cluster
// bus port (port+10000) was free too, neither of them reserved by a server
// of this process.
type portPicker struct {
	mu   sync.Mutex
	used map[int]bool
}

func newPortPicker() *portPicker { return &portPicker{used: map[int]bool{}} }

func (pp *portPicker) pick() (int, error) {
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		pp.mu.Lock()
		taken := pp.used[port]
		pp.mu.Unlock()
		if taken || port > MaxClusterPort || isReserved(port) || isReserved(port+10000) {
			l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l.Close()
		if err != nil {
			continue
		}
		bus.Close()
		pp.mu.Lock()
		taken = pp.used[port] || pp.used[port+10000]
		pp.used[port], pp.used[port+10000] = true, true
		pp.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port pair (port, port+10000) with port <= %d", MaxClusterPort)
}
