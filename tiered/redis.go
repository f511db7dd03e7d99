package tiered

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/keyslot"
	"github.com/thermoscache/thermos/tracking"
)

// redisTier is the Redis tier. It owns every command tiered sends for data
// keys — reads, writes, deletes, revalidation, prefix invalidation — and
// the mapping of Redis failures to tiered's sentinels. (The lease lock and
// the fenced write of loaded values are package herd's.) It sends them on
// the memory tier's tracking client: one connection per node, on which
// replies and invalidations arrive in order, and whose NOLOOP keeps this
// process's own SETs and DELs from coming back as invalidations; or, with
// Options.RedisClient, on the caller's client (see shared.go).
type redisTier struct {
	c *Cache
}

var _ tier = redisTier{}

func (redisTier) source() Source { return SourceRedis }

// get reads key and its remaining TTL in one round trip.
func (rt redisTier) get(ctx context.Context, r *route, key string) (entry, bool, bool, error) {
	cl, err := rt.client()
	if err != nil {
		return entry{}, false, false, err
	}
	start, sent := time.Now(), rt.c.now()
	res := cl.DoMulti(ctx, cl.B().Get().Key(key).Build(), cl.B().Pttl().Key(key).Build())
	r.stats.redisLatency.Record(time.Since(start))
	raw, pttl, ok, err := getReply(res[0], res[1])
	if err != nil || !ok {
		return entry{}, false, false, redisError("", err)
	}
	e, ok, err := rt.c.decodeRemote(r, key, raw, pttl, sent)
	if err != nil {
		return entry{}, false, false, err
	}
	return e, true, ok, nil
}

// getReply reads the replies of GET key and PTTL key. A key that vanished
// between the two is a miss.
func getReply(get, pttl rueidis.RedisResult) (raw []byte, ttl time.Duration, ok bool, err error) {
	raw, err = get.AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	ms, err := pttl.AsInt64()
	if err != nil {
		return nil, 0, false, err
	}
	switch {
	case ms == -2:
		return nil, 0, false, nil
	case ms < 0:
		return raw, -1, true, nil
	}
	return raw, time.Duration(ms) * time.Millisecond, true, nil
}

// reply is one key's answer to getMany.
type reply struct {
	raw  []byte
	pttl time.Duration
	ok   bool
	err  error // mapped by redisError
}

// getMany reads keys and their remaining TTLs in one pipelined round trip.
func (rt redisTier) getMany(ctx context.Context, keys []string) ([]reply, error) {
	cl, err := rt.client()
	if err != nil {
		return nil, err
	}
	cmds := make(rueidis.Commands, 0, 2*len(keys))
	for _, k := range keys {
		cmds = append(cmds, cl.B().Get().Key(k).Build(), cl.B().Pttl().Key(k).Build())
	}
	res := cl.DoMulti(ctx, cmds...)
	out := make([]reply, len(keys))
	for j := range keys {
		r := &out[j]
		r.raw, r.pttl, r.ok, r.err = getReply(res[2*j], res[2*j+1])
		r.err = redisError("", r.err)
	}
	return out, nil
}

// Redis never fills: values reach it by writes and the herd's fenced write.
func (redisTier) fill(*route, string, entry, tracking.Ticket) bool { return false }

func (redisTier) confirm(*route, string, entry, tracking.Ticket) bool { return true }

// client returns the client for data commands, ErrUnavailable while the
// tracking connection is not connected (Redis was down at Open),
// errNoRedis when no route uses Redis.
func (rt redisTier) client() (rueidis.Client, error) {
	if cl := rt.c.dataClient(); cl != nil {
		return cl, nil
	}
	if rt.c.o.Redis == nil {
		return nil, errNoRedis
	}
	return nil, newFault(ErrUnavailable, nil, "not connected")
}

// ping checks that Redis answers on the data connection.
func (rt redisTier) ping(ctx context.Context) error {
	cl, err := rt.client()
	if err != nil {
		return err
	}
	return redisError("", cl.Do(ctx, cl.B().Ping().Build()).Error())
}

// set writes enc under key with PX ttl.
func (rt redisTier) set(ctx context.Context, key string, enc []byte, ttl time.Duration) error {
	cl, err := rt.client()
	if err != nil {
		return err
	}
	cmd := cl.B().Set().Key(key).Value(rueidis.BinaryString(enc)).PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()
	return redisError("", cl.Do(ctx, cmd).Error())
}

// del deletes key.
func (rt redisTier) del(ctx context.Context, key string) error {
	cl, err := rt.client()
	if err != nil {
		return err
	}
	return redisError("", cl.Do(ctx, cl.B().Del().Key(key).Build()).Error())
}

// redisError maps a Redis failure, in step what (may be empty): a reply
// that is an error (NOPERM, OOM, READONLY, WRONGTYPE) is ErrRefused,
// anything else (the connection, a deadline that passed before Redis
// answered) ErrUnavailable, with the cause. A cancelled context stays as it
// is: the caller gave up. nil stays nil.
func redisError(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return err
	}
	kind := ErrUnavailable
	if refusal(err) {
		kind = ErrRefused
	}
	return newFault(kind, err, "%s", what)
}

// refusal reports whether err is, or wraps, a reply of Redis that is an
// error (rueidis.IsRedisErr looks at err itself only).
func refusal(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && !re.IsNil()
}

// revalidateLua compares, server-side, what each key holds with what the
// cache holds: only a small version crosses the network, never the values.
// ARGV[i] is 'v' and the 8-byte write version (compared with the envelope's
// version field, read with GETRANGE), or 'd' and the first 16 hex digits of
// the SHA-1 of a raw value. It returns, per key, its PTTL when it matches
// (-1: no expiry) and -3 when it changed or is gone. On Redis Cluster all
// keys of one call share a hash slot.
var revalidateLua = `
local out = {}
for i = 1, #KEYS do
  local want = ARGV[i]
  local ok = false
  if string.sub(want, 1, 1) == 'v' then
    local h = redis.pcall('GETRANGE', KEYS[i], 0, ` + strconv.Itoa(envelope.VersionOffset+envelope.VersionSize-1) + `)
    ok = type(h) == 'string' and #h == ` + strconv.Itoa(envelope.VersionOffset+envelope.VersionSize) + ` and
      string.byte(h, 1) == ` + strconv.Itoa(int(envelope.Magic)) + ` and
      string.sub(h, ` + strconv.Itoa(envelope.VersionOffset+1) + `) == string.sub(want, 2)
  else
    local v = redis.pcall('GET', KEYS[i])
    ok = type(v) == 'string' and string.sub(redis.sha1hex(v), 1, 16) == string.sub(want, 2)
  end
  if ok then out[i] = redis.call('PTTL', KEYS[i]) else out[i] = -3 end
end
return out
`

var (
	revalidateScript = rueidis.NewLuaScript(revalidateLua)
	// revalidateSHA is the script's SHA-1, for calls sent as pipelined
	// EVALSHA: rueidis's ExecMulti would load the script on every node
	// first, a round trip per call.
	revalidateSHA = fmt.Sprintf("%x", sha1.Sum([]byte(revalidateLua)))
)

// check is one key to revalidate and, once answered, its verdict.
type check struct {
	key     string
	version uint64
	r       *route
	t       tracking.Ticket // taken before the script is sent
	e       entry           // the local copy, for confirm
	tr      tier            // the tier that holds it
	h       uint64          // a disk copy's trust hash
	match   bool
	pttl    time.Duration
}

func expected(r *route, version uint64) string {
	if r.Raw {
		return fmt.Sprintf("d%016x", version)
	}
	var b [9]byte
	b[0] = 'v'
	binary.BigEndian.PutUint64(b[1:], version)
	return string(b[:])
}

// verify asks whether Redis still holds version for key: one round trip.
func (rt redisTier) verify(ctx context.Context, r *route, key string, version uint64) (bool, time.Duration, error) {
	cl, err := rt.client()
	if err != nil {
		return false, 0, err
	}
	if !rt.c.rights.noScripts.Load() {
		// revalidate for one key, without its batching: one EVALSHA
		// (Exec loads the script on NOSCRIPT, as revalidate does).
		res, err := revalidateScript.Exec(ctx, cl, []string{key}, []string{expected(r, version)}).AsIntSlice()
		if err == nil {
			if len(res) == 0 {
				return false, 0, nil
			}
			match, pttl := scriptAnswer(res[0])
			return match, pttl, nil
		}
		if !rt.c.scriptsRefused(err) {
			return false, 0, rt.c.revalidationRefused(redisError("revalidate", err))
		}
	}
	chk := []check{{key: key, version: version, r: r}}
	if err := rt.revalidateNoScript(ctx, cl, chk); err != nil {
		return false, 0, err
	}
	return chk[0].match, chk[0].pttl, nil
}

// scriptAnswer reads the revalidation script's answer for one key: below
// -1 a mismatch; -1 a match without TTL; else a match and its PTTL in ms.
func scriptAnswer(n int64) (match bool, pttl time.Duration) {
	switch {
	case n < -1:
		return false, 0
	case n == -1:
		return true, -1
	}
	return true, time.Duration(n) * time.Millisecond
}

// revalidateChunk is how many keys one script call checks on one server.
const revalidateChunk = 512

// revalidate answers every check: one script call per chunk of keys on one
// server, per hash slot on a cluster, all pipelined in one round trip.
func (rt redisTier) revalidate(ctx context.Context, checks []check) error {
	cl, err := rt.client()
	if err != nil {
		return err
	}
	if rt.c.rights.noScripts.Load() {
		return rt.revalidateNoScript(ctx, cl, checks)
	}
	var groups [][]int
	if cl.Mode() == rueidis.ClientModeCluster {
		bySlot := make(map[uint16][]int)
		for i := range checks {
			s := keyslot.Of(checks[i].key)
			bySlot[s] = append(bySlot[s], i)
		}
		for _, g := range bySlot {
			groups = append(groups, g)
		}
	} else {
		for i := 0; i < len(checks); i += revalidateChunk {
			g := make([]int, 0, min(revalidateChunk, len(checks)-i))
			for j := i; j < min(i+revalidateChunk, len(checks)); j++ {
				g = append(g, j)
			}
			groups = append(groups, g)
		}
	}
	execs := make([]rueidis.LuaExec, len(groups))
	cmds := make(rueidis.Commands, len(groups))
	for g, idx := range groups {
		keys := make([]string, len(idx))
		args := make([]string, len(idx))
		for j, i := range idx {
			keys[j] = checks[i].key
			args[j] = expected(checks[i].r, checks[i].version)
		}
		execs[g] = rueidis.LuaExec{Keys: keys, Args: args}
		cmds[g] = cl.B().Evalsha().Sha1(revalidateSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	}
	for g, reply := range cl.DoMulti(ctx, cmds...) {
		res, err := reply.AsIntSlice()
		if re, ok := rueidis.IsRedisErr(err); ok && re.IsNoScript() {
			// This node has not seen the script yet: Exec loads it.
			res, err = revalidateScript.Exec(ctx, cl, execs[g].Keys, execs[g].Args).AsIntSlice()
		}
		if err != nil {
			if rt.c.scriptsRefused(err) {
				return rt.revalidateNoScript(ctx, cl, checks)
			}
			return rt.c.revalidationRefused(redisError("revalidate", err))
		}
		for j, i := range groups[g] {
			if j < len(res) {
				checks[i].match, checks[i].pttl = scriptAnswer(res[j])
			}
		}
	}
	return nil
}

// revalidateBatch answers a revalidation pass's batch. Without a raw
// route among them it reads each key's header and PTTL as plain commands
// (revalidateNoScript), all pipelined: the same comparison as the script,
// at about a third of the server's time per key (the script pays for a
// Lua call per command). Either way each key's answer is what Redis held
// at some moment after its ticket was taken, and a later change is an
// invalidation the ticket or the tracking subscription sees.
func (rt redisTier) revalidateBatch(ctx context.Context, checks []check) error {
	for i := range checks {
		if checks[i].r.Raw {
			return rt.revalidate(ctx, checks)
		}
	}
	cl, err := rt.client()
	if err != nil {
		return err
	}
	return rt.revalidateNoScript(ctx, cl, checks)
}

// deleteIfSameScript deletes KEYS[1] only while it holds ARGV[1].
var deleteIfSameScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// deleteIfSame removes key from Redis if it still holds old, so a refused
// value never shadows a newer, valid one written meanwhile.
func (rt redisTier) deleteIfSame(ctx context.Context, key string, old []byte) {
	cl, err := rt.client()
	if err != nil {
		return
	}
	err = errNoScripts
	if !rt.c.rights.noScripts.Load() {
		err = deleteIfSameScript.Exec(ctx, cl, []string{key}, []string{string(old)}).Error()
	}
	if errors.Is(err, errNoScripts) || rt.c.scriptsRefused(err) {
		err = rt.deleteIfSameTx(ctx, cl, key, old)
	}
	if err != nil {
		rt.c.o.Logger.Warn("tiered: could not remove a refused value", "key", key, "err", err)
	}
}

// invalidateBatch is how many keys InvalidatePrefix deletes per round trip.
const invalidateBatch = 500

// unlinkPrefix deletes from Redis every key matching pattern for which
// owned says yes, with cursor-based SCAN and UNLINK in bounded batches on
// every primary (never KEYS). It returns how many keys it deleted and calls
// gone with each batch.
func (rt redisTier) unlinkPrefix(ctx context.Context, prefix string, owned func(string) bool, gone func([]string)) (int, error) {
	cl, err := rt.client()
	if err != nil {
		return 0, err
	}
	nodes, err := primaries(ctx, cl)
	if err != nil {
		return 0, redisError("", err)
	}
	pattern := globEscape(prefix) + "*"
	n := 0
	for _, node := range nodes {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(invalidateBatch).Build()).AsScanEntry()
			if err != nil {
				return n, redisError("scan", err)
			}
			var keys []string
			for _, k := range e.Elements {
				if owned(k) {
					keys = append(keys, k)
				}
			}
			if len(keys) > 0 {
				// Deletes go through the main client, which routes each
				// key to the primary that owns its slot now.
				cmds := make(rueidis.Commands, 0, len(keys))
				for _, k := range keys {
					cmds = append(cmds, cl.B().Unlink().Key(k).Build())
				}
				for _, res := range cl.DoMulti(ctx, cmds...) {
					if err := res.Error(); err != nil {
						return n, redisError("unlink", err)
					}
				}
				n += len(keys)
				gone(keys)
			}
			cursor = e.Cursor
			if cursor == 0 {
				break
			}
		}
	}
	return n, nil
}

// primaries returns a client per Redis primary, so a SCAN covers every
// key once: on a cluster, Nodes lists replicas too, which ROLE tells apart.
func primaries(ctx context.Context, cl rueidis.Client) ([]rueidis.Client, error) {
	nodes := cl.Nodes()
	if len(nodes) <= 1 {
		return []rueidis.Client{cl}, nil
	}
	out := make([]rueidis.Client, 0, len(nodes))
	for addr, n := range nodes {
		role, err := n.Do(ctx, n.B().Role().Build()).ToArray()
		if err != nil || len(role) == 0 {
			return nil, fmt.Errorf("role of %s: %w", addr, err)
		}
		if r, _ := role[0].ToString(); r == "master" {
			out = append(out, n)
		}
	}
	return out, nil
}

// globEscape escapes the characters SCAN MATCH treats as patterns.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// untrackedPrefix is tracked when no route needs tracking but Redis is
// used: no key is expected to start with it.
const untrackedPrefix = "\xffthermos:untracked\xff"

var errNoRedis = errors.New("tiered: no redis configured")
