package tracking_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tracking"
)

// A Redis-backed cache: reads go through Fetch, writes through Set, and
// another process's writes under "user:" invalidate the local copy.
func Example_redis() {
	ctx := context.Background()
	c, err := tracking.New(ctx, &tracking.Options{
		Redis:            &rueidis.ClientOption{InitAddress: []string{"redis.example:6379"}},
		Prefixes:         []string{"user:", "flag:"},
		MaxBytes:         256 << 20,
		ConnWriteTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if err := c.Set(ctx, "user:42", tracking.Item{Value: []byte("ada")}, []byte("ada"), time.Hour); err != nil {
		log.Fatal(err)
	}
	it, ok, err := c.Fetch(ctx, "user:42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ok, string(it.Value))
	c.OnInvalidate(func(keys []string, epochBump bool) {
		// e.g. delete keys from a disk tier; must be quick
	})
}

// A local-only cache (no Redis): a reservation taken before a slow read is
// refused if the key was invalidated meanwhile.
func Example_local() {
	c, err := tracking.New(context.Background(), &tracking.Options{MaxBytes: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	_ = c.SetLocal("route:a", tracking.Item{Value: []byte("v1")})
	it, fresh, ok := c.Get("route:a")
	fmt.Println(string(it.Value), fresh, ok)

	t := c.Reserve("route:b") // before reading a slower tier
	c.Invalidate("route:b")   // a write happened meanwhile
	filled := c.Fill(t, "route:b", tracking.Item{Value: []byte("old")}, true)
	fmt.Println("filled:", filled)
	// Output:
	// v1 true true
	// filled: false
}
