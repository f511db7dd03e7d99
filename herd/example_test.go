package herd_test

import (
	"context"
	"fmt"
	"time"

	"github.com/thermoscache/thermos/herd"
)

// A local-only Group (no Redis client) is pure single-flight: concurrent
// callers for one key share one load.
func Example() {
	g, err := herd.New(nil)
	if err != nil {
		panic(err)
	}
	defer g.Close()

	cache := map[string][]byte{} // the caller's own cache, filled after Do
	lookup := func(context.Context) ([]byte, bool, error) {
		v, ok := cache["user:42"]
		return v, ok, nil
	}
	load := func(context.Context) ([]byte, time.Duration, error) {
		return []byte("Ada"), time.Minute, nil // the origin
	}
	r, err := g.Do(context.Background(), "user:42", lookup, load)
	if err != nil {
		panic(err)
	}
	cache["user:42"] = r.Value
	fmt.Printf("%s loaded=%v\n", r.Value, r.Loaded)

	r, _ = g.Do(context.Background(), "user:42", lookup, load)
	fmt.Printf("%s loaded=%v\n", r.Value, r.Loaded)
	// Output:
	// Ada loaded=true
	// Ada loaded=false
}

// ExampleShouldRefresh shows XFetch's decision for a value whose last rebuild
// took 100ms: far from its soft expiry a draw rarely triggers, at the expiry
// every draw does.
func ExampleShouldRefresh() {
	soft := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	delta := 100 * time.Millisecond
	fmt.Println(herd.ShouldRefresh(soft.Add(-time.Second), soft, delta, 1, 0.5))
	fmt.Println(herd.ShouldRefresh(soft, soft, delta, 1, 0.5))
	// Output:
	// false
	// true
}
