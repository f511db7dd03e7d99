package tracking

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/rueidis"
)

// ErrACL is returned by New when the Redis user the cache connects as may not
// read (GET) keys under one of the tracked prefixes; the error names the
// prefix and the user. New does not retry it, even with ConnectInBackground.
// Test for it with errors.Is(err, tracking.ErrACL).
var ErrACL = errors.New("tracking: redis user may not read a tracked prefix")

// aclProbeSuffixes are appended to each tracked prefix to make the keys the
// ACL check asks about. Key permissions are glob patterns, so no finite set
// of keys proves that a user may read everything under a prefix; these
// catch the usual mistakes: a pattern for another prefix, a narrower
// pattern ("app:users:*" while tracking "app:"), read permission missing
// (%W~ only), or a key pattern that excludes the prefix itself.
var aclProbeSuffixes = [...]string{"probe", "\x00", "\xff", "0", "Z", "thermos:acl-probe"}

// checkACL refuses a tracking user that may not read every tracked prefix.
//
// Why: newer Redis servers deliver a BCAST invalidation only to clients whose
// user may read the key. A cache that holds such a key anyway (its own Set
// under write-only rights, a disk tier after a restart, an ACL changed while
// running) would never hear that another client changed it, and would serve
// the old value until it expires locally. Refusing to start is the only safe
// answer: nothing tells the cache which invalidations it is not getting.
//
// How: the user's rights are asked with ACL WHOAMI and then ACL DRYRUN
// <user> GET <key> for a few keys under each prefix (an empty prefix means
// every key). Both are @admin commands that an application user is often not
// allowed. Then the check falls back to asking the real question directly:
// GET <key> for the same keys on the connection, where a NOPERM reply means
// the user may not read that key (or may not run GET at all, which also
// leaves the cache unable to work). The fallback is exact for the keys it
// asks about, so a user without ACL rights is neither refused nor warned;
// the only cost is one GET of a key that almost surely does not exist. Any
// other failure (the server did not answer) is ErrUnavailable.
//
// The caller closes its client on failure.
func (c *Cache) checkACL(ctx context.Context, client rueidis.Client) error {
	err := c.aclDryRun(ctx, client)
	var rerr *rueidis.RedisError
	if errors.As(err, &rerr) {
		// ACL commands not allowed or not available: ask directly.
		err = c.aclProbe(ctx, client)
	}
	return err
}

// aclKeys returns the keys asked about for prefix.
func aclKeys(prefix string) []string {
	keys := make([]string, 0, len(aclProbeSuffixes)+1)
	if prefix != "" {
		keys = append(keys, prefix)
	}
	for _, s := range aclProbeSuffixes {
		keys = append(keys, prefix+s)
	}
	return keys
}

// aclPrefixes returns the tracked prefixes, "" standing for every key.
func (c *Cache) aclPrefixes() []string {
	if len(c.cfg.prefixes) == 0 {
		return []string{""}
	}
	return c.cfg.prefixes
}

// aclDryRun checks with ACL WHOAMI and ACL DRYRUN. It returns a
// *rueidis.RedisError, unwrapped, when the server refuses either command.
func (c *Cache) aclDryRun(ctx context.Context, client rueidis.Client) error {
	user, err := client.Do(ctx, client.B().AclWhoami().Build()).ToString()
	if err != nil {
		return redisOrUnavailable("acl whoami", err)
	}
	for _, p := range c.aclPrefixes() {
		keys := aclKeys(p)
		cmds := make(rueidis.Commands, len(keys))
		for i, k := range keys {
			cmds[i] = client.B().AclDryrun().Username(user).Command("GET").Arg(k).Build()
		}
		for i, r := range client.DoMulti(ctx, cmds...) {
			verdict, err := r.ToString()
			if err != nil {
				return redisOrUnavailable("acl dryrun", err)
			}
			if verdict != "OK" {
				return aclError(user, p, keys[i], verdict)
			}
		}
	}
	return nil
}

// aclProbe checks by reading the probe keys.
func (c *Cache) aclProbe(ctx context.Context, client rueidis.Client) error {
	for _, p := range c.aclPrefixes() {
		keys := aclKeys(p)
		cmds := make(rueidis.Commands, len(keys))
		for i, k := range keys {
			cmds[i] = client.B().Get().Key(k).Build()
		}
		for i, r := range client.DoMulti(ctx, cmds...) {
			err := r.Error()
			if err == nil || rueidis.IsRedisNil(err) {
				continue
			}
			if rerr, ok := rueidis.IsRedisErr(err); ok {
				if strings.HasPrefix(rerr.Error(), "NOPERM") {
					return aclError("", p, keys[i], rerr.Error())
				}
				continue // WRONGTYPE and the like: the key is readable
			}
			return fmt.Errorf("%w: acl probe: %v", ErrUnavailable, err)
		}
	}
	return nil
}

func redisOrUnavailable(what string, err error) error {
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		return rerr
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

func aclError(user, prefix, key, reason string) error {
	who := "the redis user"
	if user != "" {
		who = fmt.Sprintf("redis user %q", user)
	}
	what := fmt.Sprintf("tracked prefix %q", prefix)
	if prefix == "" {
		what = "every key (tracking without a prefix)"
	}
	return fmt.Errorf("%w: %s may not read %s (key %q: %s); invalidations for it could be silently dropped",
		ErrACL, who, what, key, strings.TrimSpace(reason))
}
