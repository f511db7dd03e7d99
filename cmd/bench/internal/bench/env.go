package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redisproc"
)

// env is what a run has to work with: a way to reach Redis, if any.
type env struct {
	redis     *redisConn // nil when the run has no Redis
	redisDesc string     // how Redis was reached, or why not
	topology  string     // "single Redis", "Redis Cluster (N primaries)", or "" without Redis
	proc      *redisproc.Server
	cluster   *redisproc.Cluster
	logger    *slog.Logger // thermos's background warnings, to the run's stderr
	token     string       // unique per run: keeps thermos keys apart from earlier runs'
}

// redisConn is how every client a run opens reaches Redis: the addresses
// (one server, or any nodes of a cluster: rueidis finds the rest) and the
// credentials and TLS settings of every connection. It is never printed:
// the password stays out of every output.
type redisConn struct {
	addrs    []string
	user     string
	password string
	tls      *tls.Config // nil: plain TCP
	caPEM    []byte      // the CA bundle tls was built from, for the workers
}

// option returns opt with the addresses, credentials and TLS settings set.
func (r *redisConn) option(opt rueidis.ClientOption) rueidis.ClientOption {
	opt.InitAddress = append([]string(nil), r.addrs...)
	opt.Username, opt.Password = r.user, r.password
	if r.tls != nil {
		opt.TLSConfig = r.tls.Clone()
	}
	return opt
}

// client opens a rueidis client with opt, without retries: a failed
// benchmark request is counted, not hidden.
func (r *redisConn) client(opt rueidis.ClientOption) (rueidis.Client, error) {
	opt = r.option(opt)
	opt.DisableRetry = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("bench: connect to redis %s: %w", strings.Join(r.addrs, ","), err)
	}
	return c, nil
}

// tlsFromPEM returns a client TLS configuration that trusts only the CA
// certificates in pem.
func tlsFromPEM(pem []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in it")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// redisCheckTimeout bounds the connection check of --redis.
const redisCheckTimeout = 5 * time.Second

// openEnv connects to --redis, starts a private Redis Cluster for
// --redis-cluster, or starts a private redis-server when the binary is on
// PATH. Without any it prints why to stderr and returns an env without
// Redis: the Redis-free scenarios still run.
func openEnv(ctx context.Context, c Config, stderr io.Writer) (*env, error) {
	e := &env{
		logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		token:  strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	switch {
	case c.NoRedis:
		e.redisDesc = "off (--no-redis)"
		return e, nil
	case c.Redis != "":
		conn := &redisConn{addrs: c.redisAddrs(), user: c.RedisUser, password: string(c.RedisPassword)}
		if c.RedisTLSCA != "" {
			pem, err := os.ReadFile(c.RedisTLSCA)
			if err != nil {
				return nil, fmt.Errorf("%w: --redis-tls-ca: %v", ErrConfig, err)
			}
			if conn.tls, err = tlsFromPEM(pem); err != nil {
				return nil, fmt.Errorf("%w: --redis-tls-ca %s: %v", ErrConfig, c.RedisTLSCA, err)
			}
			conn.caPEM = pem
		}
		topo, err := probe(ctx, conn)
		if err != nil {
			return nil, fmt.Errorf("bench: --redis %s: %w", c.Redis, err)
		}
		var how []string
		if conn.tls != nil {
			how = append(how, "TLS")
		}
		if conn.user != "" {
			how = append(how, "user "+conn.user)
		}
		if conn.password != "" {
			how = append(how, "password")
		}
		e.redis, e.topology = conn, topo
		e.redisDesc = topo + ", existing, at " + strings.Join(conn.addrs, ",")
		if len(how) > 0 {
			e.redisDesc += " (" + strings.Join(how, ", ") + ")"
		}
		return e, nil
	case c.RedisCluster:
		cl, err := redisproc.StartCluster(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("bench: --redis-cluster: start a private Redis Cluster: %w", err)
		}
		e.cluster = cl
		e.redis = &redisConn{addrs: cl.Addrs()}
		e.topology = clusterTopology(len(cl.Addrs()))
		e.redisDesc = e.topology + ", private, on " + strings.Join(cl.Addrs(), ",")
		return e, nil
	}
	p, err := redisproc.Start(ctx, nil)
	if errors.Is(err, redisproc.ErrNotFound) {
		e.redisDesc = "none (redis-server not on PATH)"
		fmt.Fprintln(stderr, "bench: redis-server is not on PATH and no --redis ADDR was given: "+
			"skipping the parts that need Redis (install redis-server, or pass --redis ADDR)")
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bench: start a private redis-server: %w", err)
	}
	e.proc, e.redis = p, &redisConn{addrs: []string{p.Addr()}}
	e.topology = topologySingle
	e.redisDesc = e.topology + ", private redis-server on " + p.Addr()
	return e, nil
}

// onCluster reports whether the run's Redis is a Redis Cluster.
func (e *env) onCluster() bool { return strings.HasPrefix(e.topology, "Redis Cluster") }

// topologySingle describes a Redis that is not a cluster.
const topologySingle = "single Redis"

// clusterTopology describes a Redis Cluster of n primaries.
func clusterTopology(n int) string {
	if n <= 0 {
		return "Redis Cluster (primaries unknown)"
	}
	return fmt.Sprintf("Redis Cluster (%d primaries)", n)
}

// probe checks that conn reaches Redis and says whether it is one server
// or a cluster (rueidis decides from the addresses: a cluster node answers
// CLUSTER SLOTS), and how many primaries serve the cluster's slots.
func probe(ctx context.Context, conn *redisConn) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	defer cancel()
	cl, err := conn.client(rueidis.ClientOption{DisableCache: true})
	if err != nil {
		return "", err
	}
	defer cl.Close()
	if err := cl.Do(cctx, cl.B().Ping().Build()).Error(); err != nil {
		return "", err
	}
	if cl.Mode() != rueidis.ClientModeCluster {
		return topologySingle, nil
	}
	info, err := cl.Do(cctx, cl.B().ClusterInfo().Build()).ToString()
	if err != nil {
		return clusterTopology(0), nil // CLUSTER INFO may be refused by ACL; rueidis managed CLUSTER SLOTS
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_size:"); ok {
			n, _ := strconv.Atoi(v)
			return clusterTopology(n), nil
		}
	}
	return clusterTopology(0), nil
}

// Close stops the private redis-server or cluster, if the run started one.
func (e *env) Close() error {
	var errs []error
	if e.proc != nil {
		errs = append(errs, e.proc.Close())
	}
	if e.cluster != nil {
		errs = append(errs, e.cluster.Close())
	}
	return errors.Join(errs...)
}

// loadBatch is how many SETs one preload round trip pipelines.
const loadBatch = 1000

// load stores keys with valueFor values, pipelining per-key SETs with
// DoMulti (an MSET across slots would fail on a cluster; rueidis sends each
// SET to its slot's primary). It never flushes: --redis may point at a
// server holding other data; every benchmark key starts with "bench:".
func (e *env) load(ctx context.Context, keys []string, size int) error {
	c, err := e.redis.client(redisNoCache())
	if err != nil {
		return err
	}
	defer c.Close()
	return setAll(ctx, c, keys, func(k string) []byte { return valueFor(k, size) })
}

// setAll SETs every key to value(key), loadBatch keys per pipelined round
// trip.
func setAll(ctx context.Context, c rueidis.Client, keys []string, value func(string) []byte) error {
	cmds := make(rueidis.Commands, 0, loadBatch)
	for i := 0; i < len(keys); i += loadBatch {
		cmds = cmds[:0]
		for _, k := range keys[i:min(i+loadBatch, len(keys))] {
			cmds = append(cmds, c.B().Set().Key(k).Value(rueidis.BinaryString(value(k))).Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("bench: preload: %w", err)
			}
		}
	}
	return nil
}
