package tiered

import (
	"context"
	"errors"
	"testing"
)

// profileOrigin is a TypedLoader of its own type, as a caller's repository
// would be: Typed.GetOrLoad takes it as Cache.GetOrLoad takes a Loader.
type profileOrigin struct{ calls int }

func (o *profileOrigin) Load(_ context.Context, key string) (profile, error) {
	o.calls++
	if key == "p:none" {
		return profile{}, ErrNotFound
	}
	return profile{Name: "loaded " + key}, nil
}

var _ TypedLoader[profile] = (*profileOrigin)(nil)

func TestTypedLoader(t *testing.T) {
	ctx := t.Context()
	ty := NewTyped[profile](openT(t, nil), nil)
	origin := &profileOrigin{}
	for range 2 {
		p, ok, err := ty.GetOrLoad(ctx, "p:1", origin)
		if err != nil || !ok || p.Name != "loaded p:1" {
			t.Fatalf("GetOrLoad = %+v, %v, %v; want the origin's value", p, ok, err)
		}
	}
	if origin.calls != 1 {
		t.Errorf("origin called %d times for two reads, want 1", origin.calls)
	}
	if _, ok, err := ty.GetOrLoad(ctx, "p:none", origin); err != nil || ok {
		t.Errorf("GetOrLoad of a missing value = %v, %v; want a miss", ok, err)
	}
	if _, _, err := ty.GetOrLoad(ctx, "p:2", nil); !errors.Is(err, ErrNoLoader) {
		t.Errorf("GetOrLoad with a nil TypedLoader = %v, want ErrNoLoader", err)
	}
	var nilFunc TypedLoaderFunc[profile]
	if _, _, err := ty.GetOrLoad(ctx, "p:2", nilFunc); !errors.Is(err, ErrNoLoader) {
		t.Errorf("GetOrLoad with a nil TypedLoaderFunc = %v, want ErrNoLoader", err)
	}
	var nilBytes LoaderFunc
	if _, _, err := ty.c.GetOrLoad(ctx, "p:2", nilBytes); !errors.Is(err, ErrNoLoader) {
		t.Errorf("Cache.GetOrLoad with a nil LoaderFunc = %v, want ErrNoLoader", err)
	}
	// On a key memory holds too (GetOrLoad's hit path checks the loader
	// on its own).
	for _, l := range []Loader{nil, nilBytes} {
		if _, _, err := ty.c.GetOrLoad(ctx, "p:1", l); !errors.Is(err, ErrNoLoader) {
			t.Errorf("Cache.GetOrLoad of a cached key with loader %#v = %v, want ErrNoLoader", l, err)
		}
	}
}
