package tiered

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/herd"
)

// RightsError is returned (wrapped) by Open when the Redis user may not do
// something the cache needs: read and write a route's keys or the herd's
// lock keys, or run one of the commands the cache sends. It matches
// ErrRefused. The rights thermos needs, and the ones it can do without
// (degrading as the package documentation describes), are listed in the
// package documentation under "Redis ACL".
type RightsError struct {
	// User is the Redis user, as ACL WHOAMI names it; empty when the user
	// may not ask.
	User string
	// Missing lists the missing rights as ACL SETUSER rules that would
	// grant them: "+evalsha" (a command), "~app:*" (keys), "&herd:done:*"
	// (channels).
	Missing []string
	// Probes says, for each entry of Missing, the command that showed it.
	Probes []string
}

func (e *RightsError) Error() string {
	who := "the redis user"
	if e.User != "" {
		who = fmt.Sprintf("redis user %q", e.User)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tiered: %s lacks %s (", who, strings.Join(e.Missing, " "))
	for i, p := range e.Probes {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", e.Missing[i], p)
	}
	b.WriteString(`): see "Redis ACL" in the package documentation`)
	return b.String()
}

// Is makes a RightsError match ErrRefused.
func (e *RightsError) Is(target error) bool { return target == ErrRefused }

// rights is what Open found the Redis user may not do but the cache can do
// without.
type rights struct {
	// noScripts: EVAL/EVALSHA refused. The herd uses WATCH/MULTI/EXEC,
	// revalidation reads the envelope's header with GETRANGE.
	noScripts atomic.Bool
	// noNotify: the notification channels refused. Waiters in other
	// processes poll the lease instead of being woken.
	noNotify atomic.Bool
	// refusedWarned is when a refused revalidation was last logged (Unix
	// ns): at most one WARN per refusedWarnEvery.
	refusedWarned atomic.Int64
	// checked is set once the rights have been checked against a
	// connected server.
	checked atomic.Bool
}

const refusedWarnEvery = time.Minute

// lockPrefix and channelPrefix are the herd's, defaulted.
func (o *Options) lockPrefix() string { return orDefault(o.LockPrefix, herd.DefaultLockPrefix) }
func (o *Options) channelPrefix() string {
	return orDefault(o.ChannelPrefix, herd.DefaultChannelPrefix)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// validateHerd checks LockPrefix and ChannelPrefix. Every error wraps
// ErrConfig.
func (o *Options) validateHerd() error {
	switch lp, cp := o.lockPrefix(), o.channelPrefix(); {
	case strings.ContainsAny(lp, "{}"):
		// The herd puts the data key's hash tag after it: a brace in the
		// prefix would change the lock key's slot on Redis Cluster.
		return fmt.Errorf("%w: LockPrefix %q contains a brace", ErrConfig, lp)
	case strings.ContainsAny(cp, "{}"):
		return fmt.Errorf("%w: ChannelPrefix %q contains a brace", ErrConfig, cp)
	case lp == cp:
		return fmt.Errorf("%w: LockPrefix and ChannelPrefix are both %q", ErrConfig, lp)
	}
	return nil
}

// need says what the cache does when a right is missing.
type need uint8

const (
	needCore     need = iota // refused at Open
	needScripts              // degrade: transactions, GETRANGE revalidation
	needTx                   // refused at Open when scripts are refused too
	needChannels             // degrade: waiters poll
	needCluster              // refused at Open, on Redis Cluster only
)

// probe is one command that needs some rights, chosen to do nothing
// whatever it is run on: its keys and channel carry a random token no real
// name has, and it writes only to a key that exists (SET … XX).
type probe struct {
	need     need
	cmd      []string // name tokens ("GET", or "CLUSTER", "SLOTS")
	key      string   // its key, or ""
	args     []string
	keyRule  string // the ACL rule covering key
	chanRule string // the ACL rule covering the channel in args
	how      probeConn
}

type probeConn uint8

const (
	onClient    probeConn = iota // pipelined on the client
	inTx                         // WATCH, UNWATCH, MULTI, EXEC on a dedicated connection
	inSubscribe                  // SUBSCRIBE, UNSUBSCRIBE on a dedicated connection
	onEachNode                   // on every node (ROLE)
)

// rule is the ACL rule granting the command itself: "+get", "+cluster|slots".
func (p *probe) rule() string { return "+" + strings.ToLower(strings.Join(p.cmd, "|")) }

func (p *probe) String() string { return strings.Join(p.words(), " ") }

// words is the command as sent: name tokens, key, arguments.
func (p *probe) words() []string {
	w := slices.Clone(p.cmd)
	if p.key != "" {
		w = append(w, p.key)
	}
	return append(w, p.args...)
}

// probeMark starts every probe key and channel after its prefix.
const probeMark = "thermos:acl-probe:"

// aclProbes lists what the cache sends, as harmless probes, for a user of
// the routes in o. Every Redis route's keys need reading (GET, PTTL,
// GETRANGE) and writing (SET, DEL, UNLINK); the lock keys reading and
// writing (GET, SET, DEL, PTTL, PEXPIRE); SCAN for InvalidatePrefix, PING
// for keep-alives; EVALSHA and EVAL for the herd's scripts and
// revalidation, or WATCH/UNWATCH/MULTI/EXEC instead; PUBLISH, SUBSCRIBE and
// UNSUBSCRIBE on the channels; CLUSTER SLOTS and ROLE on a cluster.
// Connecting already needed HELLO, CLIENT TRACKING and INFO (and SELECT
// with a SelectDB): tracking.New refuses a user without them.
func aclProbes(o *Options, token string, cluster bool) []probe {
	var ps []probe
	for _, r := range o.Routes {
		if r.Tiers&Redis == 0 {
			continue
		}
		k := r.Prefix + probeMark + token
		rule := "~" + globEscape(r.Prefix) + "*"
		ps = append(ps,
			probe{cmd: []string{"GET"}, key: k, keyRule: rule},
			probe{cmd: []string{"PTTL"}, key: k, keyRule: rule},
			probe{cmd: []string{"GETRANGE"}, key: k, args: []string{"0", "0"}, keyRule: rule},
			probe{cmd: []string{"SET"}, key: k, args: []string{"x", "XX", "PX", "1"}, keyRule: rule},
			probe{cmd: []string{"DEL"}, key: k, keyRule: rule},
			probe{cmd: []string{"UNLINK"}, key: k, keyRule: rule},
		)
	}
	lk := o.lockPrefix() + probeMark + token
	lrule := "~" + globEscape(o.lockPrefix()) + "*"
	ch := o.channelPrefix() + probeMark + token
	crule := "&" + globEscape(o.channelPrefix()) + "*"
	ps = append(ps,
		probe{cmd: []string{"GET"}, key: lk, keyRule: lrule},
		probe{cmd: []string{"SET"}, key: lk, args: []string{"x", "XX", "PX", "1"}, keyRule: lrule},
		probe{cmd: []string{"DEL"}, key: lk, keyRule: lrule},
		probe{cmd: []string{"PTTL"}, key: lk, keyRule: lrule},
		probe{cmd: []string{"PEXPIRE"}, key: lk, args: []string{"1"}, keyRule: lrule},
		probe{cmd: []string{"SCAN"}, args: []string{"0", "MATCH", globEscape(lk), "COUNT", "1"}},
		probe{cmd: []string{"PING"}},
		// A script nobody loaded: NOSCRIPT means EVALSHA may run.
		probe{need: needScripts, cmd: []string{"EVALSHA"}, args: []string{probeSHA, "0"}},
		probe{need: needScripts, cmd: []string{"EVAL"}, args: []string{probeScript, "0"}},
		probe{need: needTx, cmd: []string{"WATCH"}, key: lk, keyRule: lrule, how: inTx},
		probe{need: needTx, cmd: []string{"UNWATCH"}, how: inTx},
		// Outside a transaction: "DISCARD without MULTI" means allowed.
		probe{need: needTx, cmd: []string{"DISCARD"}, how: inTx},
		probe{need: needTx, cmd: []string{"MULTI"}, how: inTx},
		probe{need: needTx, cmd: []string{"EXEC"}, how: inTx},
		probe{need: needChannels, cmd: []string{"PUBLISH"}, args: []string{ch, "x"}, chanRule: crule},
		probe{need: needChannels, cmd: []string{"SUBSCRIBE"}, args: []string{ch}, chanRule: crule, how: inSubscribe},
		probe{need: needChannels, cmd: []string{"UNSUBSCRIBE"}, args: []string{ch}, chanRule: crule, how: inSubscribe},
	)
	if cluster {
		ps = append(ps,
			probe{need: needCluster, cmd: []string{"CLUSTER", "SLOTS"}},
			probe{need: needCluster, cmd: []string{"ROLE"}, how: onEachNode},
		)
	}
	return ps
}

const probeScript = "return 0"

var probeSHA = fmt.Sprintf("%x", sha1.Sum([]byte(probeScript)))

// verdict of one probe: "" allowed, else the rule that is missing.
func denied(p *probe, msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "' command"):
		return p.rule()
	case strings.Contains(m, "key") && p.keyRule != "":
		return p.keyRule
	case strings.Contains(m, "channel") && p.chanRule != "":
		return p.chanRule
	}
	return p.rule()
}

// rightsCheckTimeout bounds the check at Open.
const rightsCheckTimeout = 10 * time.Second

// checkRights checks, once Redis is connected, that its user may do what
// the cache will ask: with ACL DRYRUN where the user may run it, otherwise
// by sending each command on names no key or channel has. A missing right
// the cache cannot do without fails Open with a *RightsError; one it can
// do without (scripts, channels) is logged and turns the fallback on.
// Without Redis routes it does nothing; with Redis unreachable at Open the
// check runs when the connection comes up, and reports by logging.
func (c *Cache) checkRights(ctx context.Context) error {
	if !slices.ContainsFunc(c.o.Routes, func(r Route) bool { return r.Tiers&Redis != 0 }) {
		return nil
	}
	cl := c.mem.Client()
	if cl == nil {
		c.checkRightsLater()
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, rightsCheckTimeout)
	defer cancel()
	return c.applyRights(c.findRights(ctx, cl))
}

// checkRightsLater runs the check once the background connection is made:
// the memory tier announces it as an epoch bump.
func (c *Cache) checkRightsLater() {
	kick := make(chan struct{}, 1)
	c.mem.OnInvalidate(func(_ []string, bump bool) {
		if bump {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for !c.rights.checked.Load() {
			select {
			case <-c.done:
				return
			case <-kick:
			}
			cl := c.mem.Client()
			if cl == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), rightsCheckTimeout)
			go func() {
				select {
				case <-c.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := c.applyRights(c.findRights(ctx, cl)); err != nil {
				c.o.Logger.Error("tiered: redis connected, but its user lacks rights the cache needs; operations needing them will fail", "err", err)
			}
			cancel()
		}
	}()
}

// found is what findRights learnt.
type foundRights struct {
	user    string
	missing map[need][]string // rules, in probe order, without duplicates
	probes  map[string]string // rule -> the probe that showed it missing
	err     error             // the check could not complete
}

func (f *foundRights) add(p *probe, rule string) {
	if _, dup := f.probes[rule]; dup {
		return
	}
	f.missing[p.need] = append(f.missing[p.need], rule)
	f.probes[rule] = p.String()
}

// applyRights refuses what the cache cannot do without, and turns on the
// fallbacks for the rest.
func (c *Cache) applyRights(f foundRights) error {
	if f.err != nil {
		// Redis went away during the check: Open goes on (the cache
		// serves by policy while it is down), and an operation that needs
		// a missing right fails with ErrRefused when it runs.
		c.o.Logger.Warn("tiered: could not check the redis user's rights", "err", f.err)
		return nil
	}
	c.rights.checked.Store(true)
	fatal := append(slices.Clone(f.missing[needCore]), f.missing[needCluster]...)
	if len(f.missing[needScripts]) > 0 && len(f.missing[needTx]) > 0 {
		// Neither scripts nor transactions: the herd cannot take a
		// lease. Either set of rights would do; name both.
		fatal = append(fatal, f.missing[needScripts]...)
		fatal = append(fatal, f.missing[needTx]...)
	}
	if len(fatal) > 0 {
		e := &RightsError{User: f.user, Missing: fatal}
		for _, r := range fatal {
			e.Probes = append(e.Probes, f.probes[r])
		}
		return fmt.Errorf("tiered: open: %w", e)
	}
	if m := f.missing[needScripts]; len(m) > 0 {
		c.rights.noScripts.Store(true)
		c.o.Logger.Warn("tiered: the redis user may not run scripts; the herd uses WATCH/MULTI/EXEC transactions "+
			"and revalidation reads each entry's header with GETRANGE (more round trips)", "missing", strings.Join(m, " "))
	}
	if m := f.missing[needChannels]; len(m) > 0 {
		c.rights.noNotify.Store(true)
		c.o.Logger.Warn("tiered: the redis user may not use the herd's notification channels; "+
			"processes waiting for another's load poll the lease every second instead of being woken",
			"missing", strings.Join(m, " "))
	}
	return nil
}

// scriptsRefused reports whether err says the server will not run scripts
// (EVAL/EVALSHA refused by the ACL or renamed away) and, the first time,
// switches to the script-free paths and says so.
func (c *Cache) scriptsRefused(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return false
	}
	msg := strings.ToLower(re.Error())
	if !(strings.HasPrefix(msg, "noperm") && (strings.Contains(msg, "'evalsha' command") || strings.Contains(msg, "'eval' command")) ||
		strings.HasPrefix(msg, "err unknown command")) {
		return false
	}
	if !c.rights.noScripts.Swap(true) {
		c.o.Logger.Warn("tiered: redis refuses scripts; revalidating with GETRANGE", "err", err)
	}
	return true
}

// revalidationRefused logs, at most once a minute, a revalidation Redis
// refused (the user may not read the keys, or run the commands): entries
// it cannot check are not served as fresh, and the callers get the error.
func (c *Cache) revalidationRefused(err error) error {
	if !errors.Is(err, ErrRefused) {
		return err
	}
	now := time.Now().UnixNano()
	last := c.rights.refusedWarned.Load()
	if now-last >= int64(refusedWarnEvery) && c.rights.refusedWarned.CompareAndSwap(last, now) {
		c.o.Logger.Warn("tiered: redis refused revalidation; unverified entries are not served as fresh", "err", err)
	}
	return err
}

// aclRules returns the ACL SETUSER rules, after the user's name, on and
// its password, that give a user exactly the rights the cache needs for
// the routes in o (withScripts: EVAL/EVALSHA, else transactions). The
// package documentation and the README show them for an example; the
// least-privilege test creates its user from them.
func aclRules(o *Options, withScripts bool) []string {
	rules := []string{"resetkeys", "resetchannels", "-@all"}
	for _, r := range o.Routes {
		if r.Tiers&Redis != 0 {
			rules = append(rules, "~"+globEscape(r.Prefix)+"*")
		}
	}
	rules = append(rules, "~"+globEscape(o.lockPrefix())+"*", "&"+globEscape(o.channelPrefix())+"*")
	rules = append(rules, "+ping", "+info", "+client|tracking",
		"+get", "+set", "+del", "+pttl", "+getrange", "+pexpire", "+unlink", "+scan")
	if withScripts {
		rules = append(rules, "+evalsha", "+eval")
	} else {
		// DISCARD: rueidis resets a connection it takes back with it, so
		// one a cancelled transaction left inside MULTI is not reused so.
		rules = append(rules, "+watch", "+unwatch", "+multi", "+exec", "+discard")
	}
	return append(rules, "+publish", "+subscribe", "+unsubscribe")
}
