package tiered

import "context"

// Loader fetches a value from the origin after every tier has missed. It
// returns ErrNotFound if the origin has no value for key.
type Loader interface {
	Load(ctx context.Context, key string) ([]byte, error)
}

// LoaderFunc lets an ordinary function act as a Loader.
type LoaderFunc func(ctx context.Context, key string) ([]byte, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, key string) ([]byte, error) { return f(ctx, key) }

// TypedLoader is Loader for a Typed front: it fetches a value of T from the
// origin after every tier has missed, and returns ErrNotFound if the origin
// has none.
type TypedLoader[T any] interface {
	Load(ctx context.Context, key string) (T, error)
}

// TypedLoaderFunc lets an ordinary function act as a TypedLoader.
type TypedLoaderFunc[T any] func(ctx context.Context, key string) (T, error)

// Load calls f.
func (f TypedLoaderFunc[T]) Load(ctx context.Context, key string) (T, error) { return f(ctx, key) }
