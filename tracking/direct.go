package tracking

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"

	"github.com/redis/rueidis"
)

// direct decides when a bounded call may run on its caller's goroutine
// instead of a goroutine of its own: while the one connection of a
// standalone client is known healthy and few calls are inside rueidis. A
// goroutine per call (and the two handoffs it costs) is most of what a
// Redis round trip costs the cache beyond rueidis itself.
//
// Why that is safe: the two waits in rueidis that ignore a context (see
// bounded) need an unhealthy connection.
//  1. The dial wait happens only after a connection was closed. Every
//     connection of the client comes through watchDial, whose conn marks
//     trouble on Close and on any read or write error, before rueidis
//     marks the connection dead (pipe._exit closes the conn, then runs the
//     hook that makes the next call dial).
//  2. The ring of one connection holds 1024 commands. Commands inside
//     rueidis are counted (busy; a DoMulti counts each of its commands, as
//     each takes a slot) and a call runs directly only while its commands
//     keep the count within maxDirect; a command rueidis gave up on keeps its slot until its
//     reply comes, but giving up returns a context error, which marks
//     trouble: no call runs directly until the slots are known free.
//
// After trouble, calls take the goroutine path until one of them, sent
// after the last trouble, is answered (no connection error) with no
// trouble meanwhile: on one connection replies come in order, so every
// command sent before it (those given up on included) was answered or
// failed, and the connection that answered is up. Cluster and sentinel
// clients (several connections, each with its own order) always take the
// goroutine path.
//
// What is left: a call that read "healthy" just before a connection died
// and reaches rueidis just after may still wait for the redial, bounded by
// the dial's timeouts; the window is the time between two atomic loads,
// against the connection's close.
type direct struct {
	// state is gen<<1 | healthy; gen grows with every trouble.
	state atomic.Uint64
	busy  atomic.Int64 // commands inside rueidis, either path
}

// maxDirect is how many commands may be inside rueidis, a direct call's
// own included: a quarter of rueidis's ring of commands on a connection.
const maxDirect = 256

func newDirect() *direct {
	d := &direct{}
	d.state.Store(1) // the client's first connection is up: New dialled it
	return d
}

// trouble marks the connection as possibly unhealthy.
func (d *direct) trouble() {
	for {
		s := d.state.Load()
		if d.state.CompareAndSwap(s, (s>>1+1)<<1) {
			return
		}
	}
}

// answered is called when a call sent in state s got a reply: the
// connection is healthy again if nothing went wrong since.
func (d *direct) answered(s uint64) {
	if s&1 == 0 {
		d.state.CompareAndSwap(s, s|1)
	}
}

// watchDial wraps dial so that every connection it makes marks trouble
// when it closes or fails. rueidis's only type assertion on a connection
// (to turn Nagle's algorithm back on for ClientOption.DisableTCPNoDelay)
// would miss the wrapper, so noDelayOff does it here.
func (d *direct) watchDial(dial dialFunc, noDelayOff bool) dialFunc {
	return func(ctx context.Context, dst string, nd *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		conn, err := dial(ctx, dst, nd, cfg)
		if err != nil {
			d.trouble()
			return nil, err
		}
		if noDelayOff {
			inner := conn
			if tc, ok := inner.(*tls.Conn); ok {
				inner = tc.NetConn()
			}
			if tc, ok := inner.(*net.TCPConn); ok {
				tc.SetNoDelay(false)
			}
		}
		return watchedConn{Conn: conn, d: d}, nil
	}
}

type watchedConn struct {
	net.Conn
	d *direct
}

func (c watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.d.trouble()
	}
	return n, err
}

func (c watchedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.d.trouble()
	}
	return n, err
}

func (c watchedConn) Close() error {
	c.d.trouble()
	return c.Conn.Close()
}

// admit reports whether cmds may run on their caller's goroutine, and
// then counts them as busy (the caller runs them with doAdmitted).
// Blocking commands never do: they wait for a connection of rueidis's
// pool.
func (d *direct) admit(cmds ...rueidis.Completed) bool {
	if d == nil || d.state.Load()&1 == 0 {
		return false
	}
	for i := range cmds {
		if cmds[i].IsBlock() {
			return false
		}
	}
	n := int64(max(len(cmds), 1)) // a call is at least one command
	if d.busy.Add(n) > maxDirect {
		d.busy.Add(-n)
		return false
	}
	return true
}

// do runs cmd on cl, counting it as busy and judging the connection by
// its answer. d may be nil (no accounting).
func (d *direct) do(ctx context.Context, cl rueidis.Client, cmd rueidis.Completed) rueidis.RedisResult {
	if d == nil {
		return cl.Do(ctx, cmd)
	}
	d.busy.Add(1)
	return d.doAdmitted(ctx, cl, cmd)
}

// doAdmitted is do for a call admit counted already.
func (d *direct) doAdmitted(ctx context.Context, cl rueidis.Client, cmd rueidis.Completed) rueidis.RedisResult {
	s := d.state.Load()
	r := cl.Do(ctx, cmd)
	d.busy.Add(-1)
	d.judge(s, r.NonRedisError())
	return r
}

func (d *direct) doMulti(ctx context.Context, cl rueidis.Client, cmds []rueidis.Completed) []rueidis.RedisResult {
	if d == nil {
		return cl.DoMulti(ctx, cmds...)
	}
	d.busy.Add(int64(len(cmds)))
	return d.doMultiAdmitted(ctx, cl, cmds)
}

func (d *direct) doMultiAdmitted(ctx context.Context, cl rueidis.Client, cmds []rueidis.Completed) []rueidis.RedisResult {
	s := d.state.Load()
	rs := cl.DoMulti(ctx, cmds...)
	d.busy.Add(-int64(len(cmds)))
	var err error
	for i := range rs {
		if err = rs[i].NonRedisError(); err != nil {
			break
		}
	}
	d.judge(s, err)
	return rs
}

// judge marks trouble after a connection error (a context's error
// included: rueidis may keep the command's slot), and health after an
// answer to a call sent in state s.
func (d *direct) judge(s uint64, err error) {
	if err != nil {
		d.trouble()
		return
	}
	d.answered(s)
}
