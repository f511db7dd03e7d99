package tiered

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/redis/rueidis"
)

// findRights runs the probes, by ACL DRYRUN if the user may, else directly.
func (c *Cache) findRights(ctx context.Context, cl rueidis.Client) foundRights {
	f := foundRights{missing: map[need][]string{}, probes: map[string]string{}}
	var tok [12]byte
	_, _ = rand.Read(tok[:])
	probes := aclProbes(&c.o, hex.EncodeToString(tok[:]), cl.Mode() == rueidis.ClientModeCluster)
	if user, ok := c.dryRun(ctx, cl, probes, &f); ok {
		f.user = user
		return f
	}
	f = foundRights{missing: map[need][]string{}, probes: map[string]string{}}
	f.err = c.sendProbes(ctx, cl, probes, &f)
	return f
}

// dryRun asks ACL DRYRUN about every probe. It reports false when the user
// may not run ACL WHOAMI or ACL DRYRUN (or the server answered something
// else than a verdict).
func (c *Cache) dryRun(ctx context.Context, cl rueidis.Client, probes []probe, f *foundRights) (string, bool) {
	user, err := cl.Do(ctx, cl.B().AclWhoami().Build()).ToString()
	if err != nil {
		return "", false
	}
	cmds := make(rueidis.Commands, len(probes))
	for i := range probes {
		p := &probes[i]
		w := p.words()
		cmds[i] = cl.B().AclDryrun().Username(user).Command(w[0]).Arg(w[1:]...).Build()
	}
	for i, r := range cl.DoMulti(ctx, cmds...) {
		v, err := r.ToString()
		if err != nil {
			return "", false
		}
		if v != "OK" {
			f.add(&probes[i], denied(&probes[i], v))
		}
	}
	return user, true
}

// aclRefusal returns the ACL refusal in err, if it is one.
func aclRefusal(err error) (string, bool) {
	re, ok := rueidis.IsRedisErr(err)
	// EXEC refused comes as "EXECABORT … because of: NOPERM …".
	if !ok || !strings.Contains(re.Error(), "NOPERM") {
		return "", false
	}
	return re.Error(), true
}

// sendProbes runs the probes themselves. Replies other than NOPERM
// (NOSCRIPT, MOVED, a nil) mean the right is there.
func (c *Cache) sendProbes(ctx context.Context, cl rueidis.Client, probes []probe, f *foundRights) error {
	// Two pipelines, the keyed probes and the others: a cluster client
	// refuses to mix commands with and without a slot in one.
	for _, keyed := range []bool{true, false} {
		var idx []int
		for i := range probes {
			if probes[i].how == onClient && (probes[i].key != "") == keyed {
				idx = append(idx, i)
			}
		}
		cmds := make(rueidis.Commands, len(idx))
		for j, i := range idx {
			p := &probes[i]
			b := cl.B().Arbitrary(p.cmd...)
			if p.key != "" {
				b = b.Keys(p.key)
			}
			cmds[j] = b.Args(p.args...).Build()
		}
		for j, r := range cl.DoMulti(ctx, cmds...) {
			if err := c.probeResult(&probes[idx[j]], r.Error(), f); err != nil {
				return err
			}
		}
	}
	if len(f.missing[needScripts]) > 0 {
		if err := c.probeTx(ctx, cl, probes, f); err != nil {
			return err
		}
	}
	if err := c.probeSubscribe(ctx, cl, probes, f); err != nil {
		return err
	}
	for i := range probes {
		if probes[i].how != onEachNode {
			continue
		}
		for _, n := range cl.Nodes() {
			if err := c.probeResult(&probes[i], n.Do(ctx, n.B().Arbitrary(probes[i].cmd...).Build()).Error(), f); err != nil {
				return err
			}
		}
	}
	return nil
}

// probeResult records p's outcome; an error that is neither a refusal nor
// a reply is returned.
func (c *Cache) probeResult(p *probe, err error, f *foundRights) error {
	if err == nil || rueidis.IsRedisNil(err) {
		return nil
	}
	if msg, ok := aclRefusal(err); ok {
		f.add(p, denied(p, msg))
		return nil
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return nil // NOSCRIPT, MOVED, WRONGTYPE…: allowed
	}
	return err
}

func probesBy(probes []probe, how probeConn) []*probe {
	var out []*probe
	for i := range probes {
		if probes[i].how == how {
			out = append(out, &probes[i])
		}
	}
	return out
}

// dedicate returns a connection of its own, on a cluster to one node (a
// dedicated cluster connection is placed by its first command's key).
func dedicate(cl rueidis.Client) (rueidis.DedicatedClient, func()) {
	if cl.Mode() == rueidis.ClientModeCluster {
		for _, n := range cl.Nodes() {
			return n.Dedicate()
		}
	}
	return cl.Dedicate()
}

// probeTx runs WATCH, UNWATCH, MULTI and EXEC (an empty transaction) on a
// connection that is closed afterwards, never returned to the pool in the
// middle of a transaction.
func (c *Cache) probeTx(ctx context.Context, cl rueidis.Client, probes []probe, f *foundRights) error {
	dc, release := dedicate(cl)
	defer release()
	defer dc.Close()
	for _, p := range probesBy(probes, inTx) {
		b := dc.B().Arbitrary(p.cmd...)
		if p.key != "" {
			b = b.Keys(p.key)
		}
		if err := c.probeResult(p, dc.Do(ctx, b.Build()).Error(), f); err != nil {
			return err
		}
	}
	return nil
}

// probeSubscribe subscribes to and unsubscribes from a channel no one
// uses, on a connection closed afterwards.
func (c *Cache) probeSubscribe(ctx context.Context, cl rueidis.Client, probes []probe, f *foundRights) error {
	ps := probesBy(probes, inSubscribe)
	if len(ps) != 2 {
		return nil
	}
	dc, release := dedicate(cl)
	defer release()
	defer dc.Close()
	dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(rueidis.PubSubMessage) {}})
	err := dc.Do(ctx, dc.B().Subscribe().Channel(ps[0].args...).Build()).Error()
	if err := c.probeResult(ps[0], err, f); err != nil {
		return err
	}
	if err != nil {
		return nil // not subscribed: UNSUBSCRIBE would wait for nothing
	}
	return c.probeResult(ps[1], dc.Do(ctx, dc.B().Unsubscribe().Channel(ps[1].args...).Build()).Error(), f)
}
