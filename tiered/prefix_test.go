package tiered

import (
	"context"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestInvalidatePrefixStaysInItsRoutes: InvalidatePrefix removes from Redis
// only keys that belong to a route of this cache with the Redis tier. A key
// another service keeps on the same server survives InvalidatePrefix of its
// own prefix and of "", and so does a key in Redis that falls under a route
// of ours without the Redis tier. (Before, both were deleted: the SCAN took
// prefix* over the whole database.)
func TestInvalidatePrefixStaysInItsRoutes(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	c := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog, Routes: []Route{
		{Prefix: "app1:", Tiers: Memory | Redis, TTL: time.Hour},
		{Prefix: "app1:local:", Tiers: Memory, TTL: time.Hour},
	}})
	foreign := []string{"unrelated:1", "other:2", "app1:local:theirs", "app2:3"}
	for _, k := range foreign {
		mustCLI(t, s, "SET", k, "foreign")
	}
	for _, k := range []string{"app1:a", "app1:b"} {
		if err := c.Set(ctx, k, []byte("ours"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, "unrelated:mine", []byte("local"), 0); err != nil { // default route: memory only
		t.Fatal(err)
	}
	alive := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			if v, err := s.Do("GET", k); err != nil || v != "foreign" {
				t.Errorf("foreign key %s = %q, %v after InvalidatePrefix; want it untouched", k, v, err)
			}
		}
	}

	n, err := c.InvalidatePrefix(ctx, "unrelated:")
	if err != nil || n != 0 {
		t.Fatalf("InvalidatePrefix(unrelated:) = %d, %v; want 0 keys from Redis", n, err)
	}
	if _, ok := mustGet(t, c, "unrelated:mine"); ok {
		t.Error("InvalidatePrefix(unrelated:) left this cache's own local key")
	}
	alive(foreign...)

	n, err = c.InvalidatePrefix(ctx, "")
	if err != nil || n != 2 {
		t.Fatalf("InvalidatePrefix(\"\") = %d, %v; want the 2 keys of route app1:", n, err)
	}
	alive(foreign...)
	for _, k := range []string{"app1:a", "app1:b"} {
		if v, err := s.Do("EXISTS", k); err != nil || v != "0" {
			t.Errorf("EXISTS %s = %q, %v after InvalidatePrefix(\"\"); want it deleted", k, v, err)
		}
		if _, ok := mustGet(t, c, k); ok {
			t.Errorf("%s still served after InvalidatePrefix", k)
		}
	}
}
