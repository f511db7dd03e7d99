package tiered

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestErrorVocabulary drives each failure path and checks that the error
// matches its tiered sentinel, wraps its cause, and names the package and
// the key once (an error crossing tracking, herd and the tiers used to read
// `tiered: load "k": herd: load "k": tiered: "k": tiered: value too large`).
func TestErrorVocabulary(t *testing.T) {
	ctx := context.Background()
	cause := errors.New("origin exploded")
	s := redistest.Start(t, nil)
	down, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	downOpts := &rueidis.ClientOption{InitAddress: []string{"127.0.0.1:" + itoa(down)}}

	local := openT(t, &Options{Logger: quietLog, Routes: []Route{{Prefix: "", Tiers: Memory, MaxValueBytes: 8}}})
	closed := openT(t, nil)
	closed.Close()

	type tc struct {
		name  string
		key   string // the key the message must name once ("" for none)
		err   error
		want  error
		cause error // also wrapped, if set
	}
	var cases []tc
	add := func(name, key string, err, want, cause error) {
		cases = append(cases, tc{name, key, err, want, cause})
	}
	openErr := func(o *Options) error {
		c, err := Open(ctx, o)
		if err == nil {
			c.Close()
		}
		return err
	}
	add("MemoryBytes 1", "", openErr(&Options{MemoryBytes: 1}), ErrConfig, nil)
	add("negative route TTL", "", openErr(&Options{Routes: []Route{{Prefix: "a:", Tiers: Memory, TTL: -time.Second}}}), ErrConfig, nil)
	add("disk route without Dir", "", openErr(&Options{Routes: []Route{{Prefix: "a:", Tiers: Disk}}}), ErrConfig, nil)
	add("negative LeaseTTL", "", openErr(&Options{LeaseTTL: -1}), ErrConfig, nil)

	_, _, err = closed.Get(ctx, "k:closed")
	add("Get after Close", "", err, ErrClosed, nil)
	add("Set after Close", "", closed.Set(ctx, "k:closed", nil, 0), ErrClosed, nil)
	add("Delete after Close", "", closed.Delete(ctx, "k:closed"), ErrClosed, nil)
	_, _, err = closed.GetOrLoad(ctx, "k:closed", LoaderFunc(func(context.Context, string) ([]byte, error) { return nil, nil }))
	add("GetOrLoad after Close", "", err, ErrClosed, nil)
	add("Flush after Close", "", closed.Flush(ctx), ErrClosed, nil)
	_, err = closed.InvalidatePrefix(ctx, "k:")
	add("InvalidatePrefix after Close", "", err, ErrClosed, nil)

	add("empty key", "", local.Set(ctx, "", nil, 0), ErrEmptyKey, nil)
	add("key too large", "", local.Set(ctx, strings.Repeat("x", DefaultMaxKeyBytes+1), nil, 0), ErrKeyTooLarge, nil)
	add("value too large", "k:big", local.Set(ctx, "k:big", make([]byte, 9), 0), ErrValueTooLarge, nil)
	add("negative ttl", "k:ttl", local.Set(ctx, "k:ttl", nil, -time.Second), ErrInvalidTTL, nil)
	add("reserved key", "herd:lock:k:{x}", local.Set(ctx, "herd:lock:k:{x}", nil, 0), ErrReservedKey, nil)
	add("route inside LockPrefix", "", openErr(&Options{Routes: []Route{{Prefix: "herd:lock:x", Tiers: Memory}}}), ErrConfig, nil)
	_, _, err = local.GetOrLoad(ctx, "k:nil", nil)
	add("nil loader", "", err, ErrNoLoader, nil)
	_, _, err = local.GetOrLoad(ctx, "k:fail", LoaderFunc(func(context.Context, string) ([]byte, error) { return nil, cause }))
	add("loader error", "k:fail", err, ErrLoad, cause)
	_, _, err = local.GetOrLoad(ctx, "k:panic", LoaderFunc(func(context.Context, string) ([]byte, error) { panic("boom") }))
	add("loader panic", "k:panic", err, ErrLoaderPanic, nil)
	_, _, err = local.GetOrLoad(ctx, "k:loadbig", LoaderFunc(func(context.Context, string) ([]byte, error) { return make([]byte, 9), nil }))
	add("loaded value too large", "k:loadbig", err, ErrValueTooLarge, nil)

	// Redis down (never up, at Open) on every route kind with Redis.
	for _, tiers := range []Tier{Redis, Memory | Redis, Disk | Redis, Memory | Disk | Redis} {
		o := &Options{Redis: downOpts, Logger: quietLog, Routes: []Route{{Prefix: "r:", Tiers: tiers, TTL: time.Hour}}}
		if tiers&Disk != 0 {
			o.Dir = t.TempDir()
		}
		c := openT(t, o)
		name := tiers.String()
		add("Set, redis down, "+name, "r:1", c.Set(ctx, "r:1", []byte("v"), 0), ErrUnavailable, nil)
		_, _, err := c.Get(ctx, "r:2")
		add("Get, redis down, "+name, "r:2", err, ErrUnavailable, nil)
		add("Delete, redis down, "+name, "r:3", c.Delete(ctx, "r:3"), ErrUnavailable, nil)
		_, err = c.InvalidatePrefix(ctx, "r:")
		add("InvalidatePrefix, redis down, "+name, "r:", err, ErrUnavailable, nil)
	}

	// A Redis that answers with an error: the key of another type.
	c := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog, Routes: []Route{{Prefix: "w:", Tiers: Memory | Redis}}})
	mustCLI(t, s, "LPUSH", "w:list", "x")
	_, _, err = c.Get(ctx, "w:list")
	add("Get of a list", "w:list", err, ErrRefused, nil)

	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatalf("no error; want %v", tt.want)
			}
			if !errors.Is(tt.err, tt.want) {
				t.Fatalf("error %q does not match %v", tt.err, tt.want)
			}
			if tt.cause != nil && !errors.Is(tt.err, tt.cause) {
				t.Errorf("error %q does not wrap its cause %v", tt.err, tt.cause)
			}
			msg := tt.err.Error()
			if n := strings.Count(msg, "tiered:"); n != 1 {
				t.Errorf("error %q names the package %d times, want once", msg, n)
			}
			if tt.key != "" {
				if n := strings.Count(msg, `"`+tt.key+`"`); n != 1 {
					t.Errorf("error %q names key %q %d times, want once", msg, tt.key, n)
				}
			}
		})
	}
}

// TestCallsRacingClose: every call racing Close returns nil or ErrClosed,
// never another package's error.
func TestCallsRacingClose(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	for range 5 {
		c, err := Open(ctx, &Options{Redis: redisOpts(s), Dir: t.TempDir(), Logger: quietLog,
			Routes: []Route{{Prefix: "c:", Tiers: Memory | Disk | Redis, TTL: time.Hour}}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		started := make(chan struct{}, 4)
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					k := "c:" + itoa(g*100+i)
					errs <- c.Set(ctx, k, []byte("v"), 0)
					if i == 0 {
						started <- struct{}{}
					}
					_, _, err := c.Get(ctx, k)
					errs <- err
					_, _, err = c.GetOrLoad(ctx, k+"x", LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("l"), nil }))
					errs <- err
					errs <- c.Delete(ctx, k)
				}
			}()
		}
		<-started // Close while the others are in full swing
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("a call racing Close returned %v, want nil or ErrClosed", err)
			}
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
