package tiered

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// outcome is what one operation must give under a fault.
type outcome struct {
	err    error  // the sentinel the error must match; nil: no error
	value  string // the value served ("" with ok false: a miss)
	loaded bool   // whether the loader must have been called
}

// outageCase is one fault of the outage contract (tiered's doc, "Outages")
// and what each operation gives under it.
type outageCase struct {
	name string
	// connWrite is rueidis's ConnWriteTimeout for the case (zero: the
	// default).
	connWrite time.Duration
	// fault breaks Redis; the cache has already seen it when it returns.
	fault func(t *testing.T, s *redistest.Server, c *Cache)
	// held: Get and GetOrLoad of a key this cache holds in memory;
	// remote: Get of a key only Redis holds; cold: GetOrLoad of a key no
	// tier holds; failing: GetOrLoad of the held key with a failing loader.
	held, remote, cold, heldLoad, failing outcome
	set, del, prefix                      error
	// coldFail is the error of GetOrLoad of a cold key with a failing
	// loader; nil means ErrLoad.
	coldFail error
	degraded bool // cold's load ran without the lease
}

// TestOutageContract checks tiered's outage contract: for each Redis fault,
// what Get, GetOrLoad, Set, Delete and InvalidatePrefix return (the sentinel,
// with the cause wrapped), what is served, and what is counted. The route
// is Memory|Redis with MaxStale and the default Unverified policy
// (Revalidate).
func TestOutageContract(t *testing.T) {
	awaitBump := func(t *testing.T, c *Cache, before int64) {
		waitFor(t, 10*time.Second, func() bool { return c.Stats().EpochBumps > before }, "the cache to notice")
	}
	cases := []outageCase{
		{
			name: "unreachable",
			fault: func(t *testing.T, s *redistest.Server, c *Cache) {
				b := c.Stats().EpochBumps
				s.Kill()
				awaitBump(t, c, b)
			},
			held:     outcome{err: ErrUnavailable},
			remote:   outcome{err: ErrUnavailable},
			cold:     outcome{value: "loaded", loaded: true},
			heldLoad: outcome{value: "loaded", loaded: true},
			// Stale-on-error: a copy Redis cannot vouch for, which
			// MaxStale allows serving when the loader fails.
			failing: outcome{value: "held", loaded: true},
			set:     ErrUnavailable, del: ErrUnavailable, prefix: ErrUnavailable,
			degraded: true,
		},
		{
			// Frozen (SIGSTOP), before the cache notices (StalenessBound,
			// here 15s): what memory holds is served, what needs Redis
			// fails by the caller's deadline.
			name:      "frozen",
			connWrite: 5 * time.Second,
			fault:     func(t *testing.T, s *redistest.Server, c *Cache) { s.Pause(); t.Cleanup(s.Resume) },
			held:      outcome{value: "held"},
			remote:    outcome{err: ErrUnavailable},
			cold:      outcome{err: context.DeadlineExceeded},
			coldFail:  context.DeadlineExceeded,
			heldLoad:  outcome{value: "held"},
			failing:   outcome{value: "held"},
			set:       ErrUnavailable, del: ErrUnavailable, prefix: ErrUnavailable,
		},
		{
			name: "restarted empty",
			fault: func(t *testing.T, s *redistest.Server, c *Cache) {
				p := c.Stats().RevalidationPasses
				s.Kill()
				s.Restart()
				waitFor(t, 10*time.Second, func() bool { return c.Stats().RevalidationPasses > p }, "a revalidation pass")
			},
			held:     outcome{},
			remote:   outcome{},
			cold:     outcome{value: "loaded", loaded: true},
			heldLoad: outcome{value: "loaded", loaded: true},
			failing:  outcome{err: ErrLoad, loaded: true},
		},
		{
			name: "out of memory",
			fault: func(t *testing.T, s *redistest.Server, c *Cache) {
				mustCLI(t, s, "CONFIG", "SET", "maxmemory-policy", "noeviction")
				mustCLI(t, s, "CONFIG", "SET", "maxmemory", "1")
			},
			held:     outcome{value: "held"},
			remote:   outcome{value: "remote"},
			cold:     outcome{value: "loaded", loaded: true}, // the lease is a write: refused, loaded locally
			heldLoad: outcome{value: "held"},
			failing:  outcome{value: "held"},
			set:      ErrRefused, del: nil, prefix: nil,
			degraded: true,
		},
		{
			name: "read-only",
			fault: func(t *testing.T, s *redistest.Server, c *Cache) {
				// A replica of a primary that does not exist keeps its data
				// and refuses writes.
				mustCLI(t, s, "CONFIG", "SET", "replica-serve-stale-data", "yes")
				mustCLI(t, s, "REPLICAOF", "127.0.0.1", "1")
			},
			held:     outcome{value: "held"},
			remote:   outcome{value: "remote"},
			cold:     outcome{value: "loaded", loaded: true},
			heldLoad: outcome{value: "held"},
			failing:  outcome{value: "held"},
			set:      ErrRefused, del: ErrRefused, prefix: ErrRefused,
			degraded: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { testOutage(t, tc) })
	}
}

func mustCLI(t *testing.T, s *redistest.Server, args ...string) {
	t.Helper()
	if _, err := s.Do(args...); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

func testOutage(t *testing.T, tc outageCase) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	ro := redisOpts(s)
	ro.ConnWriteTimeout = tc.connWrite
	c := openT(t, &Options{Redis: ro, Logger: quietLog,
		Routes: []Route{{Prefix: "o:", Tiers: Memory | Redis, TTL: time.Hour, MaxStale: time.Hour, Beta: -1}}})
	if err := c.Set(ctx, "o:held", []byte("held"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do("SET", "o:remote", string(mustEncode(t, c, "o:remote", "remote")), "PX", "3600000"); err != nil {
		t.Fatal(err)
	}
	if v, ok := mustGet(t, c, "o:held"); !ok || string(v) != "held" {
		t.Fatalf("before the fault: Get(o:held) = %q, %v", v, ok)
	}
	tc.fault(t, s, c)

	ok := LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("loaded"), nil })
	bad := LoaderFunc(func(context.Context, string) ([]byte, error) { return nil, errors.New("origin down") })
	check := func(what string, want outcome, v []byte, found bool, err error, loaded bool) {
		t.Helper()
		switch {
		case want.err == nil && err != nil:
			t.Errorf("%s: error %v, want none", what, err)
		case want.err != nil && !errors.Is(err, want.err):
			t.Errorf("%s: error %v, want one matching %v", what, err, want.err)
		case want.err == nil && (found != (want.value != "") || string(v) != want.value):
			t.Errorf("%s = %q, %v; want %q", what, v, found, want.value)
		case loaded != want.loaded:
			t.Errorf("%s: loader called %v, want %v", what, loaded, want.loaded)
		}
	}
	// Every call gets a deadline and must return by it, plus a slack for a
	// loaded machine's scheduling (tiered/e2e's deadline test measures the
	// overrun itself, over thousands of calls).
	const deadline, slack = 300 * time.Millisecond, 250 * time.Millisecond
	timed := func(what string) func() {
		start := time.Now()
		return func() {
			if d := time.Since(start); d > deadline+slack {
				t.Errorf("%s took %v, past its %v deadline", what, d, deadline)
			}
		}
	}
	get := func(key string) ([]byte, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		defer timed("Get(" + key + ")")()
		return c.Get(ctx, key)
	}
	load := func(key string, l LoaderFunc) ([]byte, bool, error, bool) {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		defer timed("GetOrLoad(" + key + ")")()
		called := false
		v, ok, err := c.GetOrLoad(ctx, key, LoaderFunc(func(ctx context.Context, k string) ([]byte, error) {
			called = true
			return l(ctx, k)
		}))
		return v, ok, err, called
	}

	v, found, err := get("o:held")
	check("Get(held)", tc.held, v, found, err, false)
	v, found, err = get("o:remote")
	check("Get(remote)", tc.remote, v, found, err, false)
	before := c.Stats().Routes[0]
	// A cold key with a failing loader has nothing to serve instead.
	coldFail := cmp.Or(tc.coldFail, ErrLoad)
	if _, found, err, _ := load("o:failing", bad); !errors.Is(err, coldFail) {
		t.Errorf("GetOrLoad(cold) with a failing loader: %v, %v; want %v", err, found, coldFail)
	}
	v, found, err, called := load("o:held", bad)
	check("GetOrLoad(held), failing loader", tc.failing, v, found, err, called)
	v, found, err, called = load("o:cold", ok)
	check("GetOrLoad(cold)", tc.cold, v, found, err, called)
	if d := c.Stats().Routes[0].DegradedLoads - before.DegradedLoads; tc.degraded != (d > 0) {
		t.Errorf("DegradedLoads grew by %d, want growth %v", d, tc.degraded)
	}
	v, found, err, called = load("o:held", ok)
	check("GetOrLoad(held)", tc.heldLoad, v, found, err, called)

	write := func(what string, want error, f func(context.Context) error) {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		defer timed(what)()
		if err := f(ctx); !matches(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	write("Set", tc.set, func(ctx context.Context) error { return c.Set(ctx, "o:new", []byte("x"), 0) })
	write("Delete", tc.del, func(ctx context.Context) error { return c.Delete(ctx, "o:remote") })
	write("InvalidatePrefix", tc.prefix, func(ctx context.Context) error { _, err := c.InvalidatePrefix(ctx, "o:"); return err })
}

func matches(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}

// mustEncode is what a thermos cache writes to Redis for v under key.
func mustEncode(t *testing.T, c *Cache, key, v string) []byte {
	t.Helper()
	enc, _, _, err := c.encode(c.router.find(key), key, []byte(v), 0, 0, false)
	if err != nil {
		t.Fatal(fmt.Errorf("encode: %w", err))
	}
	return enc
}
