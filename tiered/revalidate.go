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

// revalidateLua compares, server-side, what each key holds with what the
// cache holds, and returns 1 (same) or 0 (changed or gone) per key: only a
// small version crosses the network, never the values. ARGV[i] is 'v' and
// the 8-byte write version (compared with the envelope's version field,
// read with GETRANGE), or 'd' and the first 16 hex digits of the SHA-1 of a
// raw value. All keys of one call share a hash slot.
var revalidateLua = `
local out = {}
for i = 1, #KEYS do
  local want = ARGV[i]
  local ok = 0
  if string.sub(want, 1, 1) == 'v' then
    local h = redis.call('GETRANGE', KEYS[i], 0, 33)
    if #h == 34 and string.byte(h, 1) == ` + strconv.Itoa(int(envelope.Magic)) + ` and string.sub(h, 27, 34) == string.sub(want, 2) then ok = 1 end
  else
    local v = redis.call('GET', KEYS[i])
    if v and string.sub(redis.sha1hex(v), 1, 16) == string.sub(want, 2) then ok = 1 end
  end
  out[i] = ok
end
return out
`

var (
	revalidateScript = rueidis.NewLuaScript(revalidateLua)
	// revalidateSHA is the script's SHA-1, for batches sent as pipelined
	// EVALSHA (see revalidateBatch).
	revalidateSHA = fmt.Sprintf("%x", sha1.Sum([]byte(revalidateLua)))
)

// check is one key to revalidate.
type check struct {
	key     string
	version uint64
	r       *route
	t       tracking.Ticket // memory ticket, taken before the script is sent
	tt      trustTicket     // disk trust ticket
	inMem   bool
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

// revalidateOne checks one key: one round trip.
func (c *Cache) revalidateOne(ctx context.Context, r *route, key string, version uint64) (bool, error) {
	cl, err := c.redis()
	if err != nil {
		return false, err
	}
	res, err := revalidateScript.Exec(ctx, cl, []string{key}, []string{expected(r, version)}).AsIntSlice()
	if err != nil {
		return false, fmt.Errorf("tiered: revalidate %q: %w", key, err)
	}
	return len(res) == 1 && res[0] == 1, nil
}

// revalidateBatch checks keys in one script call per hash slot and applies
// the answers: a match makes the entry fresh (memory) and trusted (disk), a
// mismatch drops it from every local tier.
func (c *Cache) revalidateBatch(ctx context.Context, batch []check) (refused int, err error) {
	cl, err := c.redis()
	if err != nil {
		return 0, err
	}
	bySlot := make(map[uint16][]int)
	for i := range batch {
		s := keyslot.Of(batch[i].key)
		bySlot[s] = append(bySlot[s], i)
	}
	// One script call per slot, all of them pipelined: keys without hash
	// tags rarely share a slot, so calling them one after the other cost a
	// round trip per key. rueidis sends each call to its slot's primary.
	groups := make([][]int, 0, len(bySlot))
	cmds := make(rueidis.Commands, 0, len(bySlot))
	for _, idx := range bySlot {
		keys := make([]string, len(idx))
		args := make([]string, len(idx))
		for j, i := range idx {
			keys[j] = batch[i].key
			args[j] = expected(batch[i].r, batch[i].version)
		}
		groups = append(groups, idx)
		cmds = append(cmds, cl.B().Evalsha().Sha1(revalidateSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	}
	for g, reply := range cl.DoMulti(ctx, cmds...) {
		idx := groups[g]
		res, err := reply.AsIntSlice()
		if re, ok := rueidis.IsRedisErr(err); ok && re.IsNoScript() {
			// This node has not seen the script yet: Exec loads it.
			keys := make([]string, len(idx))
			args := make([]string, len(idx))
			for j, i := range idx {
				keys[j] = batch[i].key
				args[j] = expected(batch[i].r, batch[i].version)
			}
			res, err = revalidateScript.Exec(ctx, cl, keys, args).AsIntSlice()
		}
		if err != nil {
			return refused, fmt.Errorf("tiered: revalidate %d keys: %w", len(idx), err)
		}
		for j, i := range idx {
			ch := &batch[i]
			if j < len(res) && res[j] == 1 {
				ok := true
				if ch.inMem {
					ok = c.mem.Revalidate(ch.t, ch.key, ch.version)
				}
				if ok {
					c.stats.revalidated.Add(1)
					ch.r.stats.revalidated.Add(1)
					if ch.r.Tiers&Disk != 0 {
						c.trust.add(ch.tt)
					}
				} else {
					// An invalidation of this key, or of one sharing its
					// generation slot, came in meanwhile: look again.
					refused++
				}
				continue
			}
			c.stats.dropped.Add(1)
			c.drop(ch.r, ch.key)
		}
	}
	return refused, nil
}

func (c *Cache) kickRevalidation() {
	select {
	case c.reval <- struct{}{}:
	default:
	}
}

// revalidationRetry is how long the revalidator waits before trying again
// when Redis could not answer.
const revalidationRetry = 250 * time.Millisecond

// errRecheck reports a pass in which some entries matched Redis but could
// not be promoted because an invalidation raced with the check; the pass
// runs again at once.
var errRecheck = errors.New("tiered: some entries need another check")

// revalidator checks unverified entries against Redis in the background:
// after a warm start, after every epoch bump, and again while Redis cannot
// answer.
func (c *Cache) revalidator() {
	defer c.wg.Done()
	var retry <-chan time.Time
	for {
		select {
		case <-c.done:
			return
		case <-c.reval:
		case <-retry:
		}
		retry = nil
		if _, err := c.redis(); err != nil {
			if !errors.Is(err, errNoRedis) {
				retry = time.After(revalidationRetry)
			}
			continue
		}
		start := time.Now()
		epoch := c.mem.Epoch()
		if err := c.revalidateAll(); err != nil {
			if errors.Is(err, errRecheck) {
				c.redisUp.Store(true)
				retry = time.After(time.Millisecond)
				continue
			}
			if !errors.Is(err, context.Canceled) {
				c.o.Logger.Debug("tiered: revalidation incomplete", "err", err)
			}
			retry = time.After(revalidationRetry)
			continue
		}
		if c.mem.Epoch() != epoch {
			// The epoch moved during the pass (listeners hear of a bump just
			// before it happens): entries it made unverified may have been
			// missed. Look again.
			retry = time.After(time.Millisecond)
			continue
		}
		c.redisUp.Store(true)
		c.stats.lastRevalidation.Store(int64(time.Since(start)))
		c.stats.passes.Add(1)
	}
}

// revalidateAll revalidates every unverified memory entry and every
// untrusted disk entry of Redis-backed routes.
func (c *Cache) revalidateAll() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var batch []check
	var err error
	refused := 0
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		var n int
		n, err = c.revalidateBatch(ctx, batch)
		refused += n
		batch = batch[:0]
		return err == nil
	}
	c.mem.Unverified(func(key string, version uint64) bool {
		r := c.router.find(key)
		if r.Tiers&Redis == 0 {
			return true
		}
		batch = append(batch, check{key: key, version: version, r: r, t: c.mem.Reserve(key), tt: c.trustTicket(r, key), inMem: true})
		if len(batch) >= DefaultRevalidateSize {
			return flush()
		}
		return ctx.Err() == nil
	})
	if err != nil {
		// A batch failed inside the walk (flush reset the batch, so the
		// flush below would report success): the pass is incomplete.
		return err
	}
	if !flush() {
		return err
	}
	if c.disk == nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if refused > 0 {
			return errRecheck
		}
		return nil
	}
	// Disk entries of Redis routes that memory does not hold.
	c.stats.diskReads.Add(1)
	serr := c.disk.Scan(ctx, "", func(key string, e envelope.Entry) error {
		r := c.router.find(key)
		if r.Tiers&Redis == 0 || r.Tiers&Disk == 0 || c.trust.has(key) {
			return nil
		}
		if r.Tiers&Memory != 0 {
			if _, _, ok := c.mem.Peek(key); ok {
				return nil // memory's pass covered it
			}
		}
		batch = append(batch, check{key: key, version: c.versionOf(r, &e), r: r, tt: c.trust.ticket(key)})
		if len(batch) >= DefaultRevalidateSize && !flush() {
			return err
		}
		return nil
	})
	if serr != nil {
		return serr
	}
	if !flush() {
		return err
	}
	if refused > 0 {
		return errRecheck
	}
	return nil
}

// warm loads the disk tier into memory after a restart, as unverified for
// Redis-backed routes (the revalidator checks them) and as fresh for local
// routes. It stops when the memory budget is full.
func (c *Cache) warm(ctx context.Context) error {
	var budget int64
	c.stats.diskReads.Add(1)
	err := c.disk.Scan(ctx, "", func(key string, e envelope.Entry) error {
		r := c.router.find(key)
		if r.Tiers&Disk == 0 || r.Tiers&Memory == 0 {
			return nil
		}
		budget += int64(len(key)+len(e.Payload)) + tracking.EntryOverhead
		if budget > c.o.MemoryBytes {
			return errWarmFull
		}
		if len(e.Payload) > r.MaxValueBytes {
			return nil // over the route's limit (it may have shrunk): leave it cold
		}
		it := itemOf(r, &e)
		t := c.mem.Reserve(key)
		if r.Tiers&Redis != 0 {
			c.mem.Fill(t, key, it, false)
		} else {
			c.mem.FillLocal(t, key, it)
		}
		c.stats.warmed.Add(1)
		return nil
	})
	if err != nil && !errors.Is(err, errWarmFull) {
		return fmt.Errorf("tiered: warm from disk: %w", err)
	}
	return nil
}

var errWarmFull = errors.New("memory budget full")
