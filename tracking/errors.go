package tracking

import "errors"

// Errors returned by this package. Test for them with errors.Is.
var (
	// ErrClosed is returned by every method that can fail when it is called
	// after Close.
	ErrClosed = errors.New("tracking: closed")

	// ErrInvalidOptions wraps every problem New finds in its Options,
	// Redis addresses no dial could reach included (no port, a port out of
	// range, an empty host, a URL): those are refused before dialing.
	ErrInvalidOptions = errors.New("tracking: invalid options")

	// ErrUnsupportedPolicy is returned by New for a Policy this package does
	// not implement (see Policy for why ARC is not offered).
	ErrUnsupportedPolicy = errors.New("tracking: unsupported eviction policy")

	// ErrUnsupportedServer is returned by New when the Redis server is older
	// than MinRedisVersion or does not report its version.
	ErrUnsupportedServer = errors.New("tracking: unsupported redis server")

	// ErrTrackingRefused is returned by New when the server refuses
	// CLIENT TRACKING (some managed services disable it) or RESP3.
	ErrTrackingRefused = errors.New("tracking: server refused client tracking")

	// ErrUnavailable wraps the error New gets when it cannot reach Redis at
	// start-up. What to do then (fail, or run memory-only) is the caller's
	// policy.
	ErrUnavailable = errors.New("tracking: redis unavailable")

	// ErrRefused is returned by New when Redis answers but refuses the
	// connection: wrong credentials or an unknown user (whatever the number
	// of tracked prefixes), a user without the needed rights, a certificate
	// that does not verify, or a TLS mismatch (a plain client at a TLS port,
	// a TLS client at a plain one). New does not retry it, even with
	// ConnectInBackground.
	ErrRefused = errors.New("tracking: redis refused the connection")

	// ErrNoRedis is returned by Fetch, Set and Delete on a local-only cache
	// (Options.Redis == nil).
	ErrNoRedis = errors.New("tracking: no redis configured")

	// ErrTooLarge is returned when an entry (key, value and EntryOverhead)
	// is larger than one shard's share of MaxBytes (see Cache.MaxEntryBytes).
	// Such an entry is never cached; nothing already cached is lost.
	ErrTooLarge = errors.New("tracking: entry larger than a shard's byte budget")

	// ErrEmptyKey is returned for an empty key.
	ErrEmptyKey = errors.New("tracking: empty key")

	// ErrNegativeTTL is returned by Set for a negative ttl.
	ErrNegativeTTL = errors.New("tracking: negative ttl")

	// ErrDecode wraps the error of Options.Decode when Fetch cannot decode
	// the bytes Redis returned. Nothing is cached.
	ErrDecode = errors.New("tracking: cannot decode value")
)
