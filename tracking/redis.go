package tracking

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// connect opens the tracking client and checks the server.
//
// Why this set-up: rueidis sends CLIENT TRACKING ON only when DisableCache is
// false, appending ClientTrackingOptions (default OPTIN) — with DisableCache
// true it sends no CLIENT TRACKING at all and no invalidation ever arrives.
// So the cache leaves DisableCache false and passes BCAST PREFIX … as
// ClientTrackingOptions. rueidis sends them in every connection's
// initialisation, so every reconnect (and every cluster node's connection)
// re-arms tracking before any command of ours runs on it. rueidis never sends
// CLIENT CACHING YES in BCAST mode (it checks for OPTIN). Invalidations reach
// OnInvalidations; rueidis also calls it with nil when a connection exits,
// which we treat like FLUSHALL: an epoch bump. We never call DoCache, so
// rueidis's own per-connection cache stays empty.
func (c *Cache) connect(ctx context.Context) error {
	if err := checkAddresses(c.cfg.Redis); err != nil {
		return err
	}
	ro := *c.cfg.Redis
	ro.DisableCache = false
	ro.ClientTrackingOptions = trackingArgs(c.cfg.prefixes, c.cfg.NoLoop)
	ro.OnInvalidations = c.onInvalidations
	ro.ConnWriteTimeout = c.cfg.ConnWriteTimeout
	ro.Dialer.KeepAlive = c.cfg.keepAlive
	if ro.PipelineMultiplex == 0 {
		ro.PipelineMultiplex = -1 // one connection: see Options.Redis
	}
	if ro.RetryDelay == nil {
		ro.RetryDelay = retryDelay
	}
	seeds, primaries := c.seedPrimaries(ctx, ro)
	var dir *direct
	if ro.Sentinel.MasterSet == "" {
		// Credentials are checked alone before rueidis's set-up pipeline:
		// see preflightDial.
		ro.DialCtxFn = preflightDial(&ro)
		dir = newDirect()
		ro.DialCtxFn = dir.watchDial(ro.DialCtxFn, ro.DisableTCPNoDelay)
	}
	var client rueidis.Client
	var err error
	if primaries {
		// One primary at a time. Given several seeds, rueidis dials them
		// all at once, goes on with the first to answer, and closes a
		// later one whose node its first slot refresh has meanwhile given
		// a connection of its own: a connection that armed tracking, so
		// its close is a null invalidation, an epoch bump moments after
		// start (two, with the re-arm). A single seed is dialled alone;
		// the other primaries come from the slot map.
		for _, seed := range seeds {
			ro.InitAddress = []string{seed}
			if client, err = newClient(ctx, ro); err == nil || ctx.Err() != nil {
				break
			}
		}
	} else {
		ro.InitAddress = seeds
		client, err = newClient(ctx, ro)
	}
	if err != nil {
		if errors.Is(err, rueidis.ErrNoCache) {
			return fmt.Errorf("%w: %v", ErrTrackingRefused, err)
		}
		return classifyConnectError(ctx, c.cfg.Redis, err)
	}
	if client.Mode() != rueidis.ClientModeStandalone {
		dir = nil // several connections: see direct
	}
	client = newBounded(client, &ro, dir)
	// On a cluster the checks go to the primary the client started from,
	// which just answered: a keyless command sent to the cluster client
	// may go to any node, and one that is down at start would fail New
	// while the other primaries serve their slots.
	check := client
	if primaries {
		if n, ok := client.Nodes()[ro.InitAddress[0]]; ok {
			check = n
		}
	}
	info, err := check.Do(ctx, check.B().Info().Section("server").Build()).ToString()
	if err != nil {
		client.Close()
		if _, ok := rueidis.IsRedisErr(err); ok {
			// NOPERM (a user without +info): retrying will not help.
			return fmt.Errorf("%w: info server: %v", ErrRefused, err)
		}
		return fmt.Errorf("%w: info server: %v", ErrUnavailable, err)
	}
	v, ok := infoField(info, "redis_version")
	if !ok {
		client.Close()
		return fmt.Errorf("%w: no redis_version in INFO server", ErrUnsupportedServer)
	}
	if !versionAtLeast(v, MinRedisVersion) {
		client.Close()
		return fmt.Errorf("%w: redis %s < %s", ErrUnsupportedServer, v, MinRedisVersion)
	}
	if err := c.checkACL(ctx, check); err != nil {
		client.Close()
		return err
	}
	// Closed is checked under no lock: a Close racing with a background
	// connect is caught here or by Close seeing the stored client.
	c.client.Store(&client)
	if c.closed.Load() {
		client.Close()
		return ErrClosed
	}
	return nil
}

// seedPrimaries returns the addresses the tracking client should start
// from, and whether they are a cluster's primaries: on Redis Cluster, the
// primaries only. rueidis keeps a connection to every seed it dialled
// until it learns the slot map, then closes those it does not need
// (replicas); each close reaches OnInvalidations as nil, an epoch bump,
// moments after start. So a plain client without tracking reads the slot
// map first. On a single server, or when the map cannot be read, the
// seeds are used as given.
func (c *Cache) seedPrimaries(ctx context.Context, ro rueidis.ClientOption) ([]string, bool) {
	if len(ro.InitAddress) < 2 || ro.ForceSingleClient || ro.Sentinel.MasterSet != "" {
		return ro.InitAddress, false
	}
	ro.DisableCache = true
	ro.ClientTrackingOptions = nil
	ro.OnInvalidations = nil
	boot, err := newClient(ctx, ro)
	if err != nil {
		return ro.InitAddress, false
	}
	defer boot.Close()
	if !isCluster(boot) {
		return ro.InitAddress, false
	}
	// The slot map from a node that answers: asked of the cluster client,
	// CLUSTER SLOTS may go to a seed that is down.
	t, err := readTopology(ctx, boot, c.firstToAnswer(ctx, boot, ro.InitAddress))
	if err != nil || len(t.primaries) == 0 {
		return ro.InitAddress, false
	}
	return c.answeringFirst(ctx, boot, t.primaries), true
}

// answeringFirst returns addrs with the first node to answer a PING on cl
// in front: connect tries them one at a time, so a primary that is down
// at start costs no dial timeout.
func (c *Cache) answeringFirst(ctx context.Context, cl rueidis.Client, addrs []string) []string {
	first := c.firstToAnswer(ctx, cl, addrs)
	if first == "" {
		return addrs
	}
	out := append(make([]string, 0, len(addrs)), first)
	for _, a := range addrs {
		if a != first {
			out = append(out, a)
		}
	}
	return out
}

// firstToAnswer returns the first of addrs whose node answers a PING on
// cl, or "" if none does within ConnWriteTimeout. The others' PINGs are
// cancelled.
func (c *Cache) firstToAnswer(ctx context.Context, cl rueidis.Client, addrs []string) string {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnWriteTimeout)
	defer cancel()
	nodes := cl.Nodes()
	answered := make(chan string, len(addrs)) // never blocks a sender
	asked := 0
	for _, a := range addrs {
		n, ok := nodes[a]
		if !ok {
			continue
		}
		asked++
		go func() {
			if n.Do(ctx, n.B().Ping().Build()).Error() != nil {
				a = ""
			}
			answered <- a
		}()
	}
	for range asked {
		if a := <-answered; a != "" {
			return a
		}
	}
	return ""
}

// infoField returns field's value in an INFO reply.
func infoField(info, field string) (string, bool) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// versionAtLeast reports whether dotted version v is >= min. Missing or
// non-numeric parts count as 0; so "7.0" < "7.0.5".
func versionAtLeast(v, min string) bool {
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x, _ = strconv.Atoi(a[i])
		}
		if i < len(b) {
			y, _ = strconv.Atoi(b[i])
		}
		if x != y {
			return x > y
		}
	}
	return true
}

// StalenessBound returns how long a frozen server (SIGSTOP, silent
// partition) can go unnoticed while entries are served as fresh:
// 2*Dialer.KeepAlive + ConnWriteTimeout. rueidis checks every KeepAlive
// whether anything arrived since its last check; the first check after the
// freeze may still see traffic from just before it, the next one sends a PING,
// and the connection is closed if no reply comes within ConnWriteTimeout. The
// close bumps the epoch. Zero for a local-only cache.
func (c *Cache) StalenessBound() time.Duration {
	if c.cfg.Redis == nil {
		return 0
	}
	return 2*c.cfg.keepAlive + c.cfg.ConnWriteTimeout
}

// Fetch returns key from memory if fresh, else reads it from Redis (GET),
// decodes it with Options.Decode, and fills the cache under a ticket taken
// before the GET was sent. ok is false when Redis has no such key (nothing is
// cached for it). The returned item is what Redis held when it ran the GET,
// even if an invalidation since refused the fill. Errors: ErrEmptyKey,
// ErrClosed, ErrNoRedis, ErrDecode, and Redis errors.
func (c *Cache) Fetch(ctx context.Context, key string) (it Item, ok bool, err error) {
	if key == "" {
		return Item{}, false, ErrEmptyKey
	}
	if c.closed.Load() {
		return Item{}, false, ErrClosed
	}
	if it, fresh, ok := c.Get(key); ok && fresh {
		return it, true, nil
	}
	cl, err := c.redisOrErr()
	if err != nil {
		return Item{}, false, err
	}
	t := c.Reserve(key)
	raw, err := cl.Do(ctx, cl.B().Get().Key(key).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, fmt.Errorf("tracking: fetch %q: %w", key, err)
	}
	if c.cfg.Decode != nil {
		if it, err = c.cfg.Decode(key, raw); err != nil {
			return Item{}, false, fmt.Errorf("tracking: fetch %q: %w: %w", key, ErrDecode, err)
		}
	} else {
		it = Item{Value: raw}
	}
	if hook := c.testBeforeFill; hook != nil {
		hook(key)
	}
	c.Fill(t, key, it, true)
	return it, true, nil
}

// Set writes encoded to Redis (SET key encoded, with PX ttl if ttl > 0), then
// stores it locally as fresh, so that this process reads its own write at
// once: Redis delivers the write's invalidation only after its reply. If
// another write's invalidation was applied between the SET and its reply, the
// local entry is removed instead (the other write may be newer). A key
// outside the tracked prefixes is written but not cached.
//
// Errors: ErrEmptyKey, ErrNegativeTTL, ErrClosed, ErrNoRedis, Redis errors
// (the local entry is removed: the write may or may not have happened), and
// ErrTooLarge, which means Redis holds the value but it is not cached
// locally.
func (c *Cache) Set(ctx context.Context, key string, it Item, encoded []byte, ttl time.Duration) error {
	switch {
	case key == "":
		return ErrEmptyKey
	case ttl < 0:
		return fmt.Errorf("tracking: set %q: %w", key, ErrNegativeTTL)
	case c.closed.Load():
		return ErrClosed
	}
	cl, err := c.redisOrErr()
	if err != nil {
		return err
	}
	isTracked := tracked(c.cfg.prefixes, key)
	t := c.Reserve(key)
	var limit int64
	if ttl > 0 {
		limit = c.now() + int64(ttl)
	}
	if isTracked && !c.cfg.NoLoop {
		c.noteWrite(key)
	}
	cmd := cl.B().Set().Key(key).Value(rueidis.BinaryString(encoded))
	if ttl > 0 {
		ms := max(ttl.Milliseconds(), 1)
		err = cl.Do(ctx, cmd.PxMilliseconds(ms).Build()).Error()
	} else {
		err = cl.Do(ctx, cmd.Build()).Error()
	}
	if err != nil || !isTracked {
		_, _, _ = c.writeLocal(key, nil, 0, nil)
		if err != nil {
			return fmt.Errorf("tracking: set %q: %w", key, err)
		}
		return nil
	}
	if _, _, err := c.writeLocal(key, &it, limit, &t); err != nil {
		return fmt.Errorf("tracking: set %q: stored in redis: %w", key, err)
	}
	return nil
}

// noteWrite records when a Set of key started, to measure how long its own
// invalidation takes to come back (Stats.Lag).
func (c *Cache) noteWrite(key string) {
	s := c.shardOf(c.hash(key))
	now := time.Now().UnixNano()
	s.mu.Lock()
	if len(s.mu.writes) < maxPendingWrites {
		s.mu.writes[key] = now
	}
	s.mu.Unlock()
}

// Delete removes key from Redis (DEL) and from memory. The local entry goes
// before the DEL is sent and again after its reply, so a read that raced
// with the DEL cannot leave the old value behind. Errors: ErrEmptyKey,
// ErrClosed, ErrNoRedis, Redis errors.
func (c *Cache) Delete(ctx context.Context, key string) error {
	switch {
	case key == "":
		return ErrEmptyKey
	case c.closed.Load():
		return ErrClosed
	}
	cl, err := c.redisOrErr()
	if err != nil {
		return err
	}
	_, _, _ = c.writeLocal(key, nil, 0, nil)
	err = cl.Do(ctx, cl.B().Del().Key(key).Build()).Error()
	_, _, _ = c.writeLocal(key, nil, 0, nil)
	if err != nil {
		return fmt.Errorf("tracking: delete %q: %w", key, err)
	}
	return nil
}

// redisOrErr returns the client, ErrNoRedis for a local-only cache, or
// ErrUnavailable while a background connection is still being made.
func (c *Cache) redisOrErr() (rueidis.Client, error) {
	if c.cfg.Redis == nil {
		return nil, ErrNoRedis
	}
	if cl := c.redis(); cl != nil {
		return cl, nil
	}
	return nil, fmt.Errorf("%w: not connected yet", ErrUnavailable)
}

// refused reports whether a connection error is the server (or its
// certificate) saying no, rather than the server being unreachable: such an
// error will not go away by retrying.
func refused(err error) bool {
	if _, ok := rueidis.IsRedisErr(err); ok {
		return true
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &alert)
}

// maxRetries is how many times a read-only command is retried after a
// network error: about two seconds of backoff.
const maxRetries = 20

// retryDelay is rueidis's default backoff (exponential with jitter, at most
// a second) with an end. rueidis retries a read-only command after a
// network error for as long as its context allows: forever under a context
// without deadline, so a Get while Redis is down or refuses the
// reconnection's credentials would never return. After maxRetries attempts
// the error is returned instead, and refused credentials are not retried
// at all (rueidis does not retry its own handshake's WRONGPASS, a
// RedisError; preflightDial's refusal is not one).
func retryDelay(attempts int, _ rueidis.Completed, err error) time.Duration {
	var rc *refusedCredentials
	if attempts >= maxRetries || errors.As(err, &rc) {
		return -1
	}
	base := time.Duration(1) << min(attempts, 20) * time.Microsecond
	return min(time.Second, base+rand.N(base))
}
