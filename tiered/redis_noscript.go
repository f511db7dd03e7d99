package tiered

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/envelope"
)

// The redis tier's paths for a server that refuses scripts (EVAL/EVALSHA
// renamed, or an ACL without them): the same checks, as plain commands.

// headerLen is how much of an envelope revalidation without scripts reads:
// up to the end of the write version.
const headerLen = envelope.VersionOffset + envelope.VersionSize

// revalidateNoScript answers checks without a script: the envelope's
// header up to its write version (GETRANGE) or, on raw routes, the value
// (GET, its digest computed here), and PTTL, pipelined in one round trip.
// It compares what the script compares; only more bytes cross the network.
func (rt redisTier) revalidateNoScript(ctx context.Context, cl rueidis.Client, checks []check) error {
	cmds := make(rueidis.Commands, 0, 2*len(checks))
	for i := range checks {
		k := checks[i].key
		if checks[i].r.Raw {
			cmds = append(cmds, cl.B().Get().Key(k).Build())
		} else {
			cmds = append(cmds, cl.B().Getrange().Key(k).Start(0).End(headerLen-1).Build())
		}
		cmds = append(cmds, cl.B().Pttl().Key(k).Build())
	}
	res := cl.DoMulti(ctx, cmds...)
	for i := range checks {
		ch := &checks[i]
		v, err := res[2*i].AsBytes()
		if err != nil && !rueidis.IsRedisNil(err) && !wrongType(err) {
			return rt.c.revalidationRefused(noScriptError(ch.key, err))
		}
		ms, err := res[2*i+1].AsInt64()
		if err != nil {
			return rt.c.revalidationRefused(noScriptError(ch.key, err))
		}
		var match bool
		if ch.r.Raw {
			match = v != nil && digest(v) == ch.version
		} else {
			match = len(v) == headerLen && v[0] == envelope.Magic &&
				binary.BigEndian.Uint64(v[envelope.VersionOffset:]) == ch.version
		}
		ch.match = match && ms >= -1
		ch.pttl = 0
		if ch.match {
			ch.pttl = time.Duration(ms) * time.Millisecond
			if ms == -1 {
				ch.pttl = -1
			}
		}
	}
	return nil
}

// wrongType reports whether err is Redis's WRONGTYPE reply: the key holds
// another type than a string, so it cannot hold the copy checked (a
// mismatch, as the script's pcall makes it).
func wrongType(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.HasPrefix(re.Error(), "WRONGTYPE")
}

// errNoScripts stands for a script not sent: the user may not run them.
var errNoScripts = errors.New("tiered: scripts refused")

// noScriptError maps a failure of revalidateNoScript like redisError: a
// reply that is an error is ErrRefused, anything else ErrUnavailable.
func noScriptError(key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tiered: revalidate %q: %w", key, err)
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		return fmt.Errorf("tiered: revalidate %q: %w: %w", key, ErrRefused, err)
	}
	return fmt.Errorf("tiered: revalidate %q: %w: %w", key, ErrUnavailable, err)
}

// deleteIfSameTx is deleteIfSame without a script: WATCH, GET, compare,
// then MULTI DEL EXEC, which does nothing if the key changed meanwhile.
func (rt redisTier) deleteIfSameTx(ctx context.Context, cl rueidis.Client, key string, old []byte) error {
	return cl.Dedicated(func(dc rueidis.DedicatedClient) error {
		if err := dc.Do(ctx, dc.B().Watch().Key(key).Build()).Error(); err != nil {
			return err
		}
		v, err := dc.Do(ctx, dc.B().Get().Key(key).Build()).AsBytes()
		if err != nil || string(v) != string(old) {
			_ = dc.Do(ctx, dc.B().Unwatch().Build()).Error()
			if rueidis.IsRedisNil(err) {
				return nil
			}
			return err
		}
		for _, r := range dc.DoMulti(ctx, dc.B().Multi().Build(), dc.B().Del().Key(key).Build(), dc.B().Exec().Build()) {
			if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
				return err
			}
		}
		return nil
	})
}
