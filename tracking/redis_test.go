package tracking

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func redisOpts(srv *redistest.Server) *rueidis.ClientOption {
	return &rueidis.ClientOption{InitAddress: []string{srv.Addr()}}
}

func newRedisCache(t testing.TB, srv *redistest.Server, opts *Options) *Cache {
	t.Helper()
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.Redis == nil {
		o.Redis = redisOpts(srv)
	}
	c, err := New(t.Context(), &o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newWriter returns a plain rueidis client: an external writer.
func newWriter(t testing.TB, srv *redistest.Server) rueidis.Client {
	t.Helper()
	w, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

func set(t testing.TB, w rueidis.Client, key, val string) {
	t.Helper()
	if err := w.Do(context.Background(), w.B().Set().Key(key).Value(val).Build()).Error(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
}

// invalidations returns a func that reports how many invalidations of key
// (or epoch bumps) c has heard.
func invalidations(c *Cache) func(key string) int {
	var mu sync.Mutex
	seen := map[string]int{}
	c.OnInvalidate(func(keys []string, bump bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			seen[k]++
		}
	})
	return func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[key]
	}
}

// fetchCached fetches key until the fill sticks: a fill is refused when the
// invalidation of a write that preceded the GET arrives after Reserve.
func fetchCached(t testing.TB, c *Cache, key string) Item {
	t.Helper()
	var it Item
	waitFor(t, "a fill of "+key+" to stick", 5*time.Second, func() bool {
		var err error
		if it, _, err = c.Fetch(context.Background(), key); err != nil {
			t.Fatalf("Fetch(%s): %v", key, err)
		}
		_, fresh, _ := c.Get(key)
		return fresh
	})
	return it
}

func TestRedisFetchAndInvalidate(t *testing.T) {
	srv := redistest.Start(t, nil)
	c := newRedisCache(t, srv, &Options{Prefixes: []string{"t:"}})
	w := newWriter(t, srv)
	ctx := t.Context()

	if _, ok, err := c.Fetch(ctx, "t:1"); err != nil || ok {
		t.Fatalf("Fetch(absent) = ok %v, %v", ok, err)
	}
	set(t, w, "t:1", "v1")
	if it := fetchCached(t, c, "t:1"); string(it.Value) != "v1" {
		t.Fatalf("Fetch = %q, want v1", it.Value)
	}
	mustGet(t, c, "t:1", "v1")

	set(t, w, "t:1", "v2")
	waitFor(t, "invalidation from a rueidis writer", 5*time.Second, func() bool {
		_, _, ok := c.Get("t:1")
		return !ok
	})
	fetchCached(t, c, "t:1")
	mustGet(t, c, "t:1", "v2")

	srv.CLI("SET", "t:1", "v3")
	waitFor(t, "invalidation from redis-cli", 5*time.Second, func() bool {
		_, _, ok := c.Get("t:1")
		return !ok
	})

	// Keys outside the tracked prefixes are read but never cached.
	set(t, w, "u:1", "x")
	if it, ok, err := c.Fetch(ctx, "u:1"); err != nil || !ok || string(it.Value) != "x" {
		t.Fatalf("Fetch(untracked) = %q, %v, %v", it.Value, ok, err)
	}
	mustMiss(t, c, "u:1")
	if st := c.Stats(); st.Invalidations < 2 || st.Removed < 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestRedisDecode(t *testing.T) {
	srv := redistest.Start(t, nil)
	c := newRedisCache(t, srv, &Options{Decode: func(key string, raw []byte) (Item, error) {
		if string(raw) == "bad" {
			return Item{}, errors.New("unreadable")
		}
		return Item{Value: raw, Version: uint64(len(raw))}, nil
	}})
	w := newWriter(t, srv)
	set(t, w, "d:1", "abc")
	set(t, w, "d:2", "bad")
	if it, _, err := c.Fetch(t.Context(), "d:1"); err != nil || it.Version != 3 {
		t.Errorf("Fetch(d:1) = %+v, %v", it, err)
	}
	if _, _, err := c.Fetch(t.Context(), "d:2"); !errors.Is(err, ErrDecode) {
		t.Errorf("Fetch(d:2) error = %v, want ErrDecode", err)
	}
	mustMiss(t, c, "d:2")
}

func TestOverlappingPrefixes(t *testing.T) {
	srv := redistest.Start(t, nil)
	// Redis itself refuses these prefixes on one connection; New must cover them.
	c := newRedisCache(t, srv, &Options{Prefixes: []string{"a:b:", "a:", "c:", "a:"}})
	if got := strings.Join(c.prefixes(), ","); got != "a:,c:" {
		t.Errorf("prefixes() = %s, want a:,c:", got)
	}
	w := newWriter(t, srv)
	for _, k := range []string{"a:b:1", "c:1"} {
		set(t, w, k, "1")
		fetchCached(t, c, k)
		mustGet(t, c, k, "1")
		set(t, w, k, "2")
		waitFor(t, "invalidation of "+k, 5*time.Second, func() bool { _, _, ok := c.Get(k); return !ok })
	}
}

func TestReadYourOwnWrites(t *testing.T) {
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noloop=", noLoop), func(t *testing.T) {
			srv := redistest.Start(t, nil)
			c := newRedisCache(t, srv, &Options{NoLoop: noLoop})
			ctx := t.Context()
			hits := 0
			for i := range 200 {
				v := strconv.Itoa(i)
				if err := c.Set(ctx, "k", Item{Value: []byte(v)}, []byte(v), time.Minute); err != nil {
					t.Fatal(err)
				}
				if it, fresh, ok := c.Get("k"); ok {
					hits++
					if !fresh || string(it.Value) != v {
						t.Fatalf("after Set(%s): Get = %q fresh %v", v, it.Value, fresh)
					}
				}
				if it, _, err := c.Fetch(ctx, "k"); err != nil || string(it.Value) != v {
					t.Fatalf("after Set(%s): Fetch = %q, %v", v, it.Value, err)
				}
			}
			if noLoop && hits != 200 {
				t.Errorf("with NoLoop, %d of 200 Gets after Set hit; want all", hits)
			}
			if err := c.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			mustMiss(t, c, "k")
			if _, ok, err := c.Fetch(ctx, "k"); ok || err != nil {
				t.Fatalf("Fetch after Delete = ok %v, %v", ok, err)
			}
			if !noLoop {
				if st := c.Stats(); st.Lag.Count == 0 {
					t.Errorf("no own-write lag recorded")
				} else {
					t.Logf("own-write invalidation lag: p50 %v p99 %v (%d samples)", st.Lag.Quantile(0.5), st.Lag.Quantile(0.99), st.Lag.Count)
				}
			}
		})
	}
}

func TestSetErrors(t *testing.T) {
	srv := redistest.Start(t, nil)
	c := newRedisCache(t, srv, &Options{MaxBytes: 64 << 10, Shards: 4})
	ctx := t.Context()
	if err := c.Set(ctx, "", Item{}, nil, 0); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Set(\"\") = %v", err)
	}
	if err := c.Set(ctx, "k", Item{}, nil, -time.Second); !errors.Is(err, ErrNegativeTTL) {
		t.Errorf("Set(ttl<0) = %v", err)
	}
	big := make([]byte, c.MaxEntryBytes())
	_ = c.Set(ctx, "big", item("small"), []byte("small"), 0)
	if err := c.Set(ctx, "big", Item{Value: big}, big, 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Set(too large) = %v, want ErrTooLarge", err)
	}
	mustMiss(t, c, "big")
	if it, _, err := c.Fetch(ctx, "big"); err != nil || len(it.Value) != len(big) {
		t.Errorf("Fetch(big) = %d bytes, %v; Redis should hold it", len(it.Value), err)
	}
}

func TestTrackingRefused(t *testing.T) {
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--rename-command", "CLIENT", ""}})
	_, err := New(t.Context(), &Options{Redis: redisOpts(srv)})
	if !errors.Is(err, ErrTrackingRefused) {
		t.Fatalf("New against a server without CLIENT = %v, want ErrTrackingRefused", err)
	}
}

func TestUnavailable(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(t.Context(), &Options{Redis: &rueidis.ClientOption{InitAddress: []string{fmt.Sprintf("127.0.0.1:%d", port)}}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New against a closed port = %v, want ErrUnavailable", err)
	}
}

// fakeRedis answers like a Redis server reporting version over RESP3, on
// one end of a net.Pipe.
func fakeRedis(t *testing.T, version string) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
		client, server := net.Pipe()
		t.Cleanup(func() { server.Close() })
		go func() {
			r := bufio.NewReader(server)
			for {
				args, err := readCommand(r)
				if err != nil {
					return
				}
				var reply string
				switch strings.ToUpper(args[0]) {
				case "HELLO":
					reply = fmt.Sprintf("%%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$%d\r\n%s\r\n$5\r\nproto\r\n:3\r\n", len(version), version)
				case "INFO":
					body := "# Server\r\nredis_version:" + version + "\r\n"
					reply = fmt.Sprintf("$%d\r\n%s\r\n", len(body), body)
				case "PING":
					reply = "+PONG\r\n"
				default:
					reply = "+OK\r\n"
				}
				if _, err := io.WriteString(server, reply); err != nil {
					return
				}
			}
		}()
		return client, nil
	}
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line)[1:])
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array header %q", line)
	}
	args := make([]string, n)
	for i := range args {
		if line, err = r.ReadString('\n'); err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(line)[1:])
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

func TestUnsupportedServer(t *testing.T) {
	for _, tt := range []struct {
		version string
		want    error
	}{{"7.0.4", ErrUnsupportedServer}, {"6.2.14", ErrUnsupportedServer}, {"7.0.5", nil}} {
		t.Run(tt.version, func(t *testing.T) {
			c, err := New(t.Context(), &Options{Redis: &rueidis.ClientOption{
				InitAddress:       []string{"fake:6379"},
				ForceSingleClient: true,
				DialCtxFn:         fakeRedis(t, tt.version),
			}})
			if !errors.Is(err, tt.want) {
				t.Errorf("New against redis %s = %v, want %v", tt.version, err, tt.want)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

func TestFlushAllEmptiesEveryCache(t *testing.T) {
	srv := redistest.Start(t, nil)
	w := newWriter(t, srv)
	caches := []*Cache{
		newRedisCache(t, srv, nil),
		newRedisCache(t, srv, &Options{Prefixes: []string{"f:"}}),
		newRedisCache(t, srv, &Options{KeepUnverified: true}),
	}
	for i := range 50 {
		set(t, w, fmt.Sprint("f:", i), "v")
		for _, c := range caches {
			fetchCached(t, c, fmt.Sprint("f:", i))
		}
	}
	for _, c := range caches {
		if n := c.Stats().Entries; n != 50 {
			t.Fatalf("cache holds %d entries before FLUSHALL, want 50", n)
		}
	}
	srv.CLI("FLUSHALL")
	for i, c := range caches {
		waitFor(t, fmt.Sprint("cache ", i, " to hear FLUSHALL"), 5*time.Second, func() bool { return c.Stats().EpochBumps > 0 })
		for k := range 50 {
			if _, fresh, _ := c.Get(fmt.Sprint("f:", k)); fresh {
				t.Fatalf("cache %d serves f:%d as fresh after FLUSHALL", i, k)
			}
		}
	}
	if n := caches[0].Stats().Entries; n != 0 {
		t.Errorf("cache 0 holds %d entries after FLUSHALL, want 0", n)
	}
	if n := caches[2].Stats().Entries; n != 50 {
		t.Errorf("KeepUnverified cache holds %d unverified entries, want 50", n)
	}
}
