package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redisproc"
)

// env is what a run has to work with: a Redis address, if any.
type env struct {
	redisAddr string // "" when the run has no Redis
	redisDesc string // how Redis was reached, or why not
	proc      *redisproc.Server
	logger    *slog.Logger // thermos's background warnings, to the run's stderr
	token     string       // unique per run: keeps thermos keys apart from earlier runs'
}

// redisCheckTimeout bounds the connection check of --redis.
const redisCheckTimeout = 5 * time.Second

// openEnv connects to --redis, or starts a private redis-server when the
// binary is on PATH. Without either it prints why to stderr and returns an
// env without Redis: the Redis-free scenarios still run.
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
		cctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
		defer cancel()
		cl, err := newRedisClient(c.Redis, rueidis.ClientOption{DisableCache: true})
		if err == nil {
			err = cl.Do(cctx, cl.B().Ping().Build()).Error()
			cl.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("bench: --redis %s: %w", c.Redis, err)
		}
		e.redisAddr, e.redisDesc = c.Redis, "existing server at "+c.Redis
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
	e.proc, e.redisAddr = p, p.Addr()
	e.redisDesc = "private redis-server on " + p.Addr()
	return e, nil
}

// Close stops the private redis-server, if the run started one.
func (e *env) Close() error {
	if e.proc != nil {
		return e.proc.Close()
	}
	return nil
}

// load stores keys with valueFor values, in batches. It never flushes:
// --redis may point at a server holding other data; every benchmark key
// starts with "bench:".
func (e *env) load(ctx context.Context, keys []string, size int) error {
	c, err := newRedisClient(e.redisAddr, rueidis.ClientOption{DisableCache: true})
	if err != nil {
		return err
	}
	defer c.Close()
	const batch = 1000
	for i := 0; i < len(keys); i += batch {
		cmd := c.B().Mset().KeyValue()
		for _, k := range keys[i:min(i+batch, len(keys))] {
			cmd = cmd.KeyValue(k, rueidis.BinaryString(valueFor(k, size)))
		}
		if err := c.Do(ctx, cmd.Build()).Error(); err != nil {
			return fmt.Errorf("bench: preload: %w", err)
		}
	}
	return nil
}
