package tiered

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// With RequireRoute, a key no route matches is refused by every method that
// takes a key, the loader is never called for it, and nothing is stored;
// routed keys work as usual. Without it the same key is cached in memory.
func TestRequireRoute(t *testing.T) {
	ctx := t.Context()
	routes := []Route{{Prefix: "user:", Tiers: Memory}, {Prefix: "blob:", Tiers: Memory | Disk}}
	c := openT(t, &Options{RequireRoute: true, Routes: routes, Dir: t.TempDir()})
	ty := NewTyped[profile](c, nil)
	loads := 0
	load := LoaderFunc(func(context.Context, string) ([]byte, error) { loads++; return []byte("v"), nil })
	tload := TypedLoaderFunc[profile](func(context.Context, string) (profile, error) { loads++; return profile{}, nil })

	const typo = "usr:42"
	calls := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, _, err := c.Get(ctx, typo); return err }},
		{"GetOrLoad", func() error { _, _, err := c.GetOrLoad(ctx, typo, load); return err }},
		{"GetMany", func() error { return c.GetMany(ctx, []string{"user:1", typo})[1].Err }},
		{"Set", func() error { return c.Set(ctx, typo, []byte("v"), 0) }},
		{"Delete", func() error { return c.Delete(ctx, typo) }},
		{"Typed.Get", func() error { _, _, err := ty.Get(ctx, typo); return err }},
		{"Typed.GetOrLoad", func() error { _, _, err := ty.GetOrLoad(ctx, typo, tload); return err }},
		{"Typed.Set", func() error { return ty.Set(ctx, typo, profile{}, 0) }},
		{"Typed.Delete", func() error { return ty.Delete(ctx, typo) }},
	}
	for _, tt := range calls {
		err := tt.call()
		if !errors.Is(err, ErrNoRoute) {
			t.Errorf("%s(%q) = %v, want ErrNoRoute", tt.name, typo, err)
			continue
		}
		if msg := err.Error(); strings.Count(msg, typo) != 1 || strings.Count(msg, "tiered:") != 1 {
			t.Errorf("%s: message %q should name the key and the package once", tt.name, msg)
		}
	}
	if loads != 0 {
		t.Errorf("loader called %d times for an unrouted key, want 0", loads)
	}
	if st := c.Stats(); len(st.Routes) != len(routes) || st.MemoryEntries != 0 {
		t.Errorf("stats show %d routes and %d entries; want %d routes (no default) and nothing stored",
			len(st.Routes), st.MemoryEntries, len(routes))
	}
	// A prefix wider than the routes is refused, and removes nothing.
	if err := c.Set(ctx, "user:kept", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"usr:", "", "u"} {
		if _, err := c.InvalidatePrefix(ctx, p); !errors.Is(err, ErrConfig) || !errors.Is(err, ErrNoRoute) {
			t.Errorf("InvalidatePrefix(%q), wider than the routes = %v, want ErrConfig and ErrNoRoute", p, err)
		}
	}
	if _, ok := mustGet(t, c, "user:kept"); !ok {
		t.Error("a refused InvalidatePrefix removed user:kept")
	}
	if _, err := c.InvalidatePrefix(ctx, "user:"); err != nil {
		t.Errorf("InvalidatePrefix(user:), a route's own prefix = %v", err)
	}
	if _, ok := mustGet(t, c, "user:kept"); ok {
		t.Error("InvalidatePrefix(user:) left user:kept")
	}

	for _, key := range []string{"user:1", "blob:1"} {
		if err := c.Set(ctx, key, []byte("v"), 0); err != nil {
			t.Fatalf("Set(%s): %v", key, err)
		}
		if v, ok, err := c.Get(ctx, key); err != nil || !ok || string(v) != "v" {
			t.Errorf("Get(%s) = %q, %v, %v; want v", key, v, ok, err)
		}
	}

	loose := openT(t, &Options{Routes: routes[:1]})
	if err := loose.Set(ctx, typo, []byte("v"), 0); err != nil {
		t.Errorf("without RequireRoute, Set(%q) = %v; want it cached by the default route", typo, err)
	}

	if _, err := Open(ctx, &Options{RequireRoute: true}); !errors.Is(err, ErrConfig) {
		t.Errorf("Open with RequireRoute and no routes = %v, want ErrConfig", err)
	}
}
