package herd

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// The shared lease lock. Every script and transaction touches only keys of
// one hash slot (see slotSuffix), so they work on Redis Cluster.
//
// A lease is SET lock token NX PX lease: the server's clock times it, and
// only the holder of the random token may renew, release or write through
// it. Each operation checks the token and acts in one atomic step (a script,
// or WATCH/MULTI/EXEC when scripting is refused), so a holder whose lease
// ran out and was taken by another can never delete the new lease or
// overwrite the newer value (fencing).

// acquireScript: KEYS = data, lock; ARGV = token, lease ms, mode, current.
// Mode 'd' (Do) returns the data key's value if present; mode 'r' (Refresh)
// gives up if the data key no longer holds current; mode 'l' just locks.
// Returns 0 acquired (an integer: the usual cold miss parses no array),
// {1, value, data pttl} hit, {2, lock pttl} held, {3, empty} changed. A
// lock that already holds the token counts as acquired: an acquire whose
// answer was lost (its caller's ctx ended, see Group.lead) is sent again
// with the same token.
const acquireSrc = `
local mode = ARGV[3]
if mode == 'd' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v, redis.call('PTTL', KEYS[1])} end
elseif mode == 'r' then
  if redis.call('GET', KEYS[1]) ~= ARGV[4] then return {3, ''} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 0 end
return {2, redis.call('PTTL', KEYS[2])}
`

// writeSrc is the fenced write: KEYS = data, lock; ARGV = token, value,
// ttl ms (0 = none), channel (” = none), message. It stores the value, ends
// the lease and wakes the waiters only while token holds the lock. It
// returns 0 when the lease was lost, 1 when done, 2 when done but the
// server refused the PUBLISH (pcall: the write must stand either way).
const writeSrc = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[2])
if ARGV[4] ~= '' then
  local p = redis.pcall('PUBLISH', ARGV[4], ARGV[5])
  if type(p) == 'table' and p.err then return 2 end
end
return 1
`

// releaseSrc is compare-and-delete: KEYS = lock; ARGV = token, channel,
// message. Waiters are woken so one of them takes over at once.
const releaseSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
  local p = redis.pcall('PUBLISH', ARGV[2], ARGV[3])
  if type(p) == 'table' and p.err then return 2 end
end
return 1
`

// renewSrc extends the lease: KEYS = lock; ARGV = token, lease ms.
const renewSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

type scripts struct {
	acquire, write, release, renew *rueidis.Lua
}

func newScripts() scripts {
	return scripts{
		acquire: rueidis.NewLuaScript(acquireSrc),
		write:   rueidis.NewLuaScript(writeSrc),
		release: rueidis.NewLuaScript(releaseSrc),
		renew:   rueidis.NewLuaScript(renewSrc),
	}
}

// keys are the Redis names one flight uses, all in the data key's slot.
type keys struct {
	data, lock, channel string
}

func (g *Group) keysFor(key string) keys {
	k, _ := g.flightKeys(key, nil)
	return k
}

// flightKeys returns key's names and, with tok, tok in hex: one allocation
// for all three (prefix and slotSuffix(key) twice, then the token).
func (g *Group) flightKeys(key string, tok []byte) (keys, string) {
	pre, post := slotSuffixParts(key)
	s := len(pre) + len(key) + len(post)
	var b strings.Builder
	b.Grow(len(g.o.LockPrefix) + len(g.o.ChannelPrefix) + 2*s + hex.EncodedLen(len(tok)))
	for _, prefix := range [2]string{g.o.LockPrefix, g.o.ChannelPrefix} {
		b.WriteString(prefix)
		b.WriteString(pre)
		b.WriteString(key)
		b.WriteString(post)
	}
	var h [2 * tokenBytes]byte
	b.Write(hex.AppendEncode(h[:0], tok))
	all := b.String()
	n := len(g.o.LockPrefix) + s
	m := n + len(g.o.ChannelPrefix) + s
	return keys{data: key, lock: all[:n], channel: all[n:m]}, all[m:]
}

type acquireMode string

const (
	modeDo      acquireMode = "d"
	modeRefresh acquireMode = "r"
	modeLock    acquireMode = "l"
)

type acquireState int

const (
	stAcquired acquireState = iota
	stHit
	stHeld
	stChanged
)

// maxTxAttempts bounds the retries of a WATCH transaction that keeps being
// aborted by concurrent writers.
const maxTxAttempts = 16

// errTxContended is returned when a transaction was aborted maxTxAttempts
// times in a row.
var errTxContended = errors.New("herd: transaction aborted by concurrent writes")

// scriptRefused reports whether err says the server will not run scripts:
// EVAL/EVALSHA renamed away or an ACL without them. A NOPERM about a key
// or a channel, or about a command a script called, is not that: the
// transactions would be refused the same, and switching to them would
// hide the real missing right behind "server refuses scripts".
func scriptRefused(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return false
	}
	msg := strings.ToLower(re.Error())
	return commandRefused(err, "evalsha") || commandRefused(err, "eval") || strings.Contains(msg, "unknown command")
}

// commandRefused reports whether err is an ACL refusal of the command
// named cmd itself ("NOPERM … no permissions to run the 'cmd' command").
func commandRefused(err error, cmd string) bool {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return false
	}
	// Inside a transaction the refusal comes as "EXECABORT … because of:
	// NOPERM …".
	msg := strings.ToLower(re.Error())
	return strings.Contains(msg, "noperm") && strings.Contains(msg, "'"+cmd+"' command")
}

// errPublishRefused stands for a PUBLISH a script ran with pcall and the
// server refused (the scripts return 2 then; their writes stand).
var errPublishRefused = errors.New("herd: redis refused PUBLISH on a notification channel")

// channelRefused reports whether err is an ACL refusal of a pub/sub channel:
// the user may use the keys but not the notification channels (Redis 7 ACL
// users get no channels unless granted).
func channelRefused(err error) bool {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return false
	}
	msg := strings.ToLower(re.Error())
	return strings.Contains(msg, "noperm") && strings.Contains(msg, "channel")
}

// channel returns k's notification channel, or "" once the server has
// refused publishing: writes then go without waking anyone, and waiters in
// other processes fall back to their wait timeout and the lease's expiry.
func (g *Group) channel(k keys) string {
	if g.noPublish.Load() {
		return ""
	}
	return k.channel
}

// publishRefused switches publishing off after err refused it, and reports
// whether the operation should be retried without publishing.
func (g *Group) publishRefused(err error) bool {
	if !errors.Is(err, errPublishRefused) && !channelRefused(err) && !commandRefused(err, "publish") {
		return false
	}
	if !g.noPublish.Swap(true) {
		g.o.Logger.Warn("herd: the redis user may not publish on the notification channels; "+
			"waiters will poll at WaitTimeout (grant &"+g.o.ChannelPrefix+"* to wake them at once)", "err", err)
	}
	return true
}

// exec runs a script unless scripting is off. It reports false when the
// caller must use the transaction instead.
func (g *Group) exec(ctx context.Context, s *rueidis.Lua, keys, args []string) (rueidis.RedisResult, bool) {
	if g.noScripts.Load() {
		return rueidis.RedisResult{}, false
	}
	r := s.Exec(ctx, g.client, keys, args)
	if err := r.Error(); err != nil && scriptRefused(err) {
		if !g.noScripts.Swap(true) {
			g.o.Logger.Warn("herd: server refuses scripts; using WATCH/MULTI transactions", "err", err)
		}
		return rueidis.RedisResult{}, false
	}
	return r, true
}

// dataTTL turns a data key's PTTL reply into Result.TTL: negative when the
// key has no expiry.
func dataTTL(ms int64) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

func ms(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}

// acquire takes the lease for k unless the mode says otherwise; see
// acquireSrc. pttl is the lock's remaining time when the lease is held by
// another, and the data key's (negative: none) on a hit.
func (g *Group) acquire(ctx context.Context, k keys, mode acquireMode, token string, current []byte) (acquireState, []byte, time.Duration, error) {
	r, ok := g.exec(ctx, g.scripts.acquire, []string{k.data, k.lock},
		[]string{token, g.leaseMS, string(mode), string(current)})
	if !ok {
		return g.acquireTx(ctx, k, mode, token, current)
	}
	msg, err := r.ToMessage()
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%w: %w", ErrLease, err)
	}
	if msg.IsInt64() {
		if code, _ := msg.AsInt64(); code == int64(stAcquired) {
			return stAcquired, nil, 0, nil
		}
		return 0, nil, 0, fmt.Errorf("herd: acquire lease: unexpected reply %v", msg)
	}
	arr, err := msg.ToArray()
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%w: %w", ErrLease, err)
	}
	if len(arr) < 2 {
		return 0, nil, 0, fmt.Errorf("herd: acquire lease: unexpected reply of %d elements", len(arr))
	}
	code, err := arr[0].AsInt64()
	if err != nil {
		return 0, nil, 0, fmt.Errorf("herd: acquire lease: %w", err)
	}
	switch acquireState(code) {
	case stHit:
		v, err := arr[1].AsBytes()
		if err != nil || len(arr) != 3 {
			return 0, nil, 0, fmt.Errorf("herd: acquire lease: hit reply: %d elements: %w", len(arr), err)
		}
		p, err := arr[2].AsInt64()
		if err != nil {
			return 0, nil, 0, fmt.Errorf("herd: acquire lease: %w", err)
		}
		return stHit, v, dataTTL(p), nil
	case stHeld:
		p, err := arr[1].AsInt64()
		if err != nil {
			return 0, nil, 0, fmt.Errorf("herd: acquire lease: %w", err)
		}
		return stHeld, nil, time.Duration(p) * time.Millisecond, nil
	case stAcquired, stChanged:
		return acquireState(code), nil, 0, nil
	}
	return 0, nil, 0, fmt.Errorf("herd: acquire lease: unexpected code %d", code)
}

func (g *Group) acquireTx(ctx context.Context, k keys, mode acquireMode, token string, current []byte) (st acquireState, val []byte, pttl time.Duration, err error) {
	for range maxTxAttempts {
		retry := false
		err = g.client.Dedicated(func(c rueidis.DedicatedClient) error {
			if mode != modeLock {
				if err := c.Do(ctx, c.B().Watch().Key(k.data).Build()).Error(); err != nil {
					return err
				}
				v, err := c.Do(ctx, c.B().Get().Key(k.data).Build()).AsBytes()
				present := err == nil
				if err != nil && !rueidis.IsRedisNil(err) {
					return err
				}
				if (mode == modeDo && present) || (mode == modeRefresh && (!present || !bytes.Equal(v, current))) {
					st, val = stChanged, nil
					if mode == modeDo {
						p, err := c.Do(ctx, c.B().Pttl().Key(k.data).Build()).AsInt64()
						if err != nil {
							return err
						}
						st, val, pttl = stHit, v, dataTTL(p)
					}
					return c.Do(ctx, c.B().Unwatch().Build()).Error()
				}
			}
			resps := c.DoMulti(ctx,
				c.B().Multi().Build(),
				c.B().Set().Key(k.lock).Value(token).Nx().PxMilliseconds(max(g.o.LeaseTTL.Milliseconds(), 1)).Build(),
				c.B().Get().Key(k.lock).Build(),
				c.B().Pttl().Key(k.lock).Build(),
				c.B().Exec().Build())
			for _, r := range resps[:4] {
				if err := r.Error(); err != nil {
					return err
				}
			}
			arr, err := resps[4].ToArray()
			if rueidis.IsRedisNil(err) {
				retry = true // the data key changed under WATCH
				return nil
			}
			if err != nil {
				return err
			}
			if len(arr) != 3 {
				return fmt.Errorf("unexpected EXEC reply of %d elements", len(arr))
			}
			if err := arr[0].Error(); err == nil {
				st = stAcquired
				return nil
			} else if !rueidis.IsRedisNil(err) {
				return err
			}
			if held, err := arr[1].ToString(); err == nil && held == token {
				st = stAcquired // ours already: see acquireSrc
				return nil
			}
			p, err := arr[2].AsInt64()
			if err != nil {
				return err
			}
			st, pttl = stHeld, time.Duration(p)*time.Millisecond
			return nil
		})
		if err != nil {
			return 0, nil, 0, fmt.Errorf("%w (transaction): %w", ErrLease, err)
		}
		if !retry {
			return st, val, pttl, nil
		}
	}
	return 0, nil, 0, fmt.Errorf("%w: %w", ErrLease, errTxContended)
}

// casTx runs the commands built by ops in a MULTI/EXEC only while token
// holds lock (WATCH lock, GET, compare). It reports whether they ran.
func (g *Group) casTx(ctx context.Context, lock, token string, ops func(c rueidis.DedicatedClient) rueidis.Commands) (bool, error) {
	done := false
	err := g.client.Dedicated(func(c rueidis.DedicatedClient) error {
		if err := c.Do(ctx, c.B().Watch().Key(lock).Build()).Error(); err != nil {
			return err
		}
		v, err := c.Do(ctx, c.B().Get().Key(lock).Build()).ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
		if v != token || err != nil {
			return c.Do(ctx, c.B().Unwatch().Build()).Error()
		}
		cmds := append(rueidis.Commands{c.B().Multi().Build()}, ops(c)...)
		cmds = append(cmds, c.B().Exec().Build())
		resps := c.DoMulti(ctx, cmds...)
		for _, r := range resps[:len(resps)-1] {
			if err := r.Error(); err != nil {
				return err
			}
		}
		_, err = resps[len(resps)-1].ToArray()
		if rueidis.IsRedisNil(err) {
			return nil // the lock changed under WATCH: the lease was lost
		}
		if err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

func wakeMessage() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }

// writeArgs returns the fenced write's TTL argument (ms, "0" for none) and
// wake message in one allocation.
func writeArgs(ttl time.Duration) (ttlArg, msg string) {
	var b [40]byte
	n := 1
	if ttl > 0 {
		n = len(strconv.AppendInt(b[:0], max(ttl.Milliseconds(), 1), 10))
	} else {
		b[0] = '0'
	}
	all := string(strconv.AppendInt(b[:n], time.Now().UnixNano(), 10))
	return all[:n], all[n:]
}

// writeFenced stores value under k.data, ends the lease and wakes waiters,
// only while token holds the lease. It reports whether the write happened.
func (g *Group) writeFenced(ctx context.Context, k keys, token string, value []byte, ttl time.Duration) (bool, error) {
	ttlArg, msg := writeArgs(ttl)
	// value is not modified once load returned it (Result.Value is
	// shared, read-only), so the command can use its bytes as they are:
	// a string copy would cost an allocation and a copy of the value.
	if done, ok, err := g.scriptPublish(ctx, "fenced write", g.scripts.write, []string{k.data, k.lock},
		[]string{token, bytesString(value), ttlArg, g.channel(k), msg}); ok {
		return done, err
	}
	return g.txPublish(ctx, "fenced write", k, token, func(c rueidis.DedicatedClient) rueidis.Commands {
		set := c.B().Set().Key(k.data).Value(string(value))
		if ttl > 0 {
			return rueidis.Commands{set.PxMilliseconds(max(ttl.Milliseconds(), 1)).Build(), c.B().Del().Key(k.lock).Build()}
		}
		return rueidis.Commands{set.Build(), c.B().Del().Key(k.lock).Build()}
	})
}

// release deletes the lease if token still holds it and wakes waiters.
func (g *Group) release(ctx context.Context, k keys, token string) (bool, error) {
	if done, ok, err := g.scriptPublish(ctx, "release lease", g.scripts.release, []string{k.lock},
		[]string{token, g.channel(k), wakeMessage()}); ok {
		return done, err
	}
	return g.txPublish(ctx, "release lease", k, token, func(c rueidis.DedicatedClient) rueidis.Commands {
		return rueidis.Commands{c.B().Del().Key(k.lock).Build()}
	})
}

// scriptPublish runs a script that acts only while the token holds the
// lease and then wakes the waiters on the channel among args ("" once
// publishing was refused); it returns 0 when the lease was lost, 1 when
// done, 2 when done but the PUBLISH was refused (which switches publishing
// off). ok is false when scripting is off: use txPublish instead.
func (g *Group) scriptPublish(ctx context.Context, what string, s *rueidis.Lua, keys, args []string) (done, ok bool, err error) {
	r, ok := g.exec(ctx, s, keys, args)
	if !ok {
		return false, false, nil
	}
	n, err := r.AsInt64()
	if err != nil {
		return false, true, fmt.Errorf("herd: %s: %w", what, err)
	}
	if n == 2 {
		g.publishRefused(errPublishRefused)
	}
	return n >= 1, true, nil
}

// txPublish is scriptPublish with scripting off: a transaction of ops plus
// a PUBLISH, only while token holds k's lease. A refused PUBLISH switches
// publishing off and the transaction, refused whole, runs again without it.
// (Kept apart from scriptPublish so that the closures it needs are only
// made when scripting is off.)
func (g *Group) txPublish(ctx context.Context, what string, k keys, token string, ops func(c rueidis.DedicatedClient) rueidis.Commands) (bool, error) {
	for {
		done, err := g.casTx(ctx, k.lock, token, func(c rueidis.DedicatedClient) rueidis.Commands {
			cmds := ops(c)
			if ch := g.channel(k); ch != "" {
				cmds = append(cmds, c.B().Publish().Channel(ch).Message(wakeMessage()).Build())
			}
			return cmds
		})
		if err != nil && g.publishRefused(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("herd: %s (transaction): %w", what, err)
		}
		return done, nil
	}
}

// renew extends the lease if token still holds it.
func (g *Group) renew(ctx context.Context, k keys, token string) (bool, error) {
	r, ok := g.exec(ctx, g.scripts.renew, []string{k.lock}, []string{token, g.leaseMS})
	if ok {
		n, err := r.AsInt64()
		if err != nil {
			return false, fmt.Errorf("herd: renew lease: %w", err)
		}
		return n == 1, nil
	}
	done, err := g.casTx(ctx, k.lock, token, func(c rueidis.DedicatedClient) rueidis.Commands {
		return rueidis.Commands{c.B().Pexpire().Key(k.lock).Milliseconds(max(g.o.LeaseTTL.Milliseconds(), 1)).Build()}
	})
	if err != nil {
		return false, fmt.Errorf("herd: renew lease (transaction): %w", err)
	}
	return done, nil
}

// bytesString returns b's bytes as a string without copying them. b must
// not be modified while the string is in use.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
