package tiered_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tiered"
)

// A memory-only cache: no Redis, no disk. GetOrLoad calls the loader once;
// later reads are memory hits.
func Example() {
	ctx := context.Background()
	c, err := tiered.Open(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	load := tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		fmt.Println("loading", key)
		return []byte("Ada"), nil
	})
	for range 2 {
		v, ok, err := c.GetOrLoad(ctx, "user:1:name", load)
		fmt.Println(string(v), ok, err)
	}
	if err := c.Set(ctx, "user:2:name", []byte("Grace"), time.Minute); err != nil {
		log.Fatal(err)
	}
	v, ok, _ := c.Get(ctx, "user:2:name")
	fmt.Println(string(v), ok)
	fmt.Println("memory hits:", c.Stats().Routes[0].MemoryHits)
	// Output:
	// loading user:1:name
	// Ada true <nil>
	// Ada true <nil>
	// Grace true
	// memory hits: 2
}

type profile struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

// Routes by prefix: sessions in memory and Redis, profiles on every tier
// (they survive a restart on local disk), feature flags in memory only.
func Example_redis() {
	ctx := context.Background()
	c, err := tiered.Open(ctx, &tiered.Options{
		Redis: &rueidis.ClientOption{InitAddress: []string{"localhost:6379"}},
		Dir:   "/var/cache/myservice",
		Routes: []tiered.Route{
			{Prefix: "session:", Tiers: tiered.Memory | tiered.Redis, TTL: 30 * time.Minute},
			{Prefix: "profile:", Tiers: tiered.Memory | tiered.Disk | tiered.Redis, TTL: time.Hour, MaxStale: 10 * time.Minute},
			{Prefix: "flag:", Tiers: tiered.Memory, TTL: time.Minute},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Bytes: read through, loading once across every instance on a miss.
	v, ok, err := c.GetOrLoad(ctx, "session:abc", tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		return []byte("user-42"), nil // from the database
	}))
	fmt.Println(string(v), ok, err)
	if err := c.Set(ctx, "session:abc", []byte("user-43"), 0); err != nil {
		log.Fatal(err)
	}

	// Typed values through a codec (JSON by default).
	profiles := tiered.NewTyped[profile](c, nil)
	p, ok, err := profiles.GetOrLoad(ctx, "profile:42", tiered.TypedLoaderFunc[profile](func(ctx context.Context, key string) (profile, error) {
		return profile{Name: "Ada", Roles: []string{"admin"}}, nil
	}))
	fmt.Println(p.Name, ok, err)
}

// RequireRoute refuses a key no route matches, and WithSources tells which
// tier answered each read.
func ExampleWithSources() {
	ctx := context.Background()
	c, err := tiered.Open(ctx, &tiered.Options{
		Routes:       []tiered.Route{{Prefix: "user:", Tiers: tiered.Memory}},
		RequireRoute: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	load := tiered.LoaderFunc(func(ctx context.Context, key string) ([]byte, error) { return []byte("Ada"), nil })
	var src tiered.Sources
	sctx := tiered.WithSources(ctx, &src)
	for range 2 {
		if _, _, err := c.GetOrLoad(sctx, "user:1", load); err != nil {
			log.Fatal(err)
		}
		from, _ := src.Source("user:1")
		fmt.Println("user:1 from", from)
	}
	_, _, err = c.Get(ctx, "usr:1")
	fmt.Println(errors.Is(err, tiered.ErrNoRoute), err)
	// Output:
	// user:1 from loader
	// user:1 from memory
	// true tiered: get "usr:1": no route for key
}
