package tracking

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"
)

// bounded is the tracking client as Client hands it out: rueidis's own,
// with Do and DoMulti returning by their context's deadline.
//
// Why: rueidis v1.0.79 honours a context only while a command waits for its
// reply. Two waits before that ignore it (measured by tiered/e2e
// TestDeadlines, rueidis issue #858):
//  1. while the connection is being re-established after a drop, every
//     caller waits for the one dialling (mux._pipe), up to the handshake's
//     timeout (ConnWriteTimeout, the Dialer's Timeout): a frozen or
//     blackholed server costs every call about a second past its deadline;
//  2. when the pipe's ring of commands in flight is full (a slow link, a
//     frozen server still connected: timed-out commands keep their slots
//     until their replies come), a new command waits for a free slot
//     (ring.PutOne), for as long as the link takes to drain: seconds.
//
// So when ctx can end, the call runs in a goroutine of its own and the
// caller returns ctx's error when ctx ends first — unless the connection is
// known healthy, when neither wait can happen and the call runs on its
// caller's goroutine (see direct). The command still goes
// (or fails) on its own, as a timed-out command does in rueidis: the
// goroutine ends when rueidis gives it an answer, which the waits above
// bound (the handshake times out, a dead connection fails what it holds).
// It costs a goroutine per Redis call, small beside a round trip; a context
// that cannot end (Background) calls rueidis directly. Calls given up on
// are counted while rueidis still holds them: past maxAbandoned (the ring
// of one connection), the connection is not draining, and a new call fails
// at once with errNotDraining instead of queueing one more goroutine.
type bounded struct {
	rueidis.Client
	abandoned *atomic.Int64
	calls     *sync.Pool // of *call
	// pinAll pins every command, not only retryable ones: with a
	// ConnLifetime rueidis sends any command again on errConnExpired.
	pinAll bool
	// dir lets calls run on their caller's goroutine while that is safe
	// (see direct); nil: never (cluster, sentinel).
	dir *direct
}

// maxAbandoned is how many given-up calls may wait inside rueidis at once:
// rueidis's default ring of commands in flight on one connection.
const maxAbandoned = 1 << 10

// errNotDraining fails a call while too many earlier ones are stuck.
var errNotDraining = errors.New("tracking: redis connection not draining: too many calls past their deadline")

func newBounded(cl rueidis.Client, o *rueidis.ClientOption, dir *direct) bounded {
	return bounded{Client: cl, abandoned: new(atomic.Int64), pinAll: o.ConnLifetime > 0, dir: dir,
		calls: &sync.Pool{New: func() any { return &call{fin: make(chan struct{}, 1)} }}}
}

// call is one Do or DoMulti run in a goroutine of its own. Calls are
// pooled: whichever of the caller and the goroutine is done with it last
// puts it back (the caller once it took the answer, the goroutine when the
// caller had given up), so a call costs no allocation but the goroutine's.
type call struct {
	cl   rueidis.Client
	ctx  context.Context
	cmd  rueidis.Completed
	cmds []rueidis.Completed
	r    rueidis.RedisResult
	rs   []rueidis.RedisResult
	// state: 0 running; 1 answered first; 2 the caller gave up first.
	state atomic.Int32
	// fin gets one value when the goroutine answers (state 1): a buffered
	// channel, so it can be reused.
	fin       chan struct{}
	pool      *sync.Pool
	abandoned *atomic.Int64
	dir       *direct
}

func (c *call) release() {
	fin, pool := c.fin, c.pool
	*c = call{fin: fin, pool: pool} // drop the references; state back to 0
	pool.Put(c)
}

func (c *call) run() {
	if c.cmds != nil {
		c.rs = c.dir.doMulti(c.ctx, c.cl, c.cmds)
	} else {
		c.r = c.dir.do(c.ctx, c.cl, c.cmd)
	}
	if c.state.CompareAndSwap(0, 1) {
		c.fin <- struct{}{}
		return
	}
	c.abandoned.Add(-1)
	c.release()
}

// start runs c in a goroutine and waits for it or for done; it reports
// whether c answered, and then the caller owns c (and releases it). A
// call given up on counts as abandoned until it returns.
func (b bounded) start(done <-chan struct{}, c *call) bool {
	c.cl, c.abandoned, c.dir = b.Client, b.abandoned, b.dir
	go c.run()
	select {
	case <-c.fin:
		return true
	case <-done:
		if c.state.CompareAndSwap(0, 2) {
			b.abandoned.Add(1)
			return false
		}
		<-c.fin // it answered just now: take its answer
		return true
	}
}

// pin keeps rueidis from recycling cmd into its builder pool once its reply
// is in, when rueidis may have handed cmd to two connections. Why: rueidis
// sends a command again on a new connection after a connection error when
// the command is retryable (read-only commands, Completed.IsRetryable) and,
// with a ConnLifetime, any command after errConnExpired. The writer
// goroutine of the dead connection may still read the command's bytes when
// the second attempt succeeds and the caller recycles it: a recycled
// command reused by the next builder is then a data race (seen under -race
// in TestModel's partitions: a retried GET). A command sent once is never
// recycled while a writer holds it (rueidis recycles only after a reply,
// and a failed one not at all), so it is left to rueidis's pool: pinning
// costs a command slice and its growth, four or five allocations.
func (b bounded) pin(cmd rueidis.Completed) rueidis.Completed {
	if b.pinAll || cmd.IsRetryable() {
		return cmd.Pin()
	}
	return cmd
}

func (b bounded) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	cmd = b.pin(cmd)
	done := ctx.Done()
	if done == nil {
		return b.dir.do(ctx, b.Client, cmd)
	}
	if err := ctx.Err(); err != nil {
		return rueidis.NewErrorResult(err)
	}
	if b.abandoned.Load() >= maxAbandoned {
		return rueidis.NewErrorResult(b.why(ctx))
	}
	if b.dir.admit(cmd) {
		return b.dir.doAdmitted(ctx, b.Client, cmd)
	}
	c := b.calls.Get().(*call)
	c.ctx, c.cmd, c.pool = ctx, cmd, b.calls
	if !b.start(done, c) {
		return rueidis.NewErrorResult(b.why(ctx))
	}
	r := c.r
	c.release()
	return r
}

func (b bounded) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	for i := range cmds {
		cmds[i] = b.pin(cmds[i])
	}
	done := ctx.Done()
	if done == nil || len(cmds) == 0 {
		return b.dir.doMulti(ctx, b.Client, cmds)
	}
	failed := func(err error) []rueidis.RedisResult {
		out := make([]rueidis.RedisResult, len(cmds))
		for i := range out {
			out[i] = rueidis.NewErrorResult(err)
		}
		return out
	}
	if err := ctx.Err(); err != nil {
		return failed(err)
	}
	if b.abandoned.Load() >= maxAbandoned {
		return failed(b.why(ctx))
	}
	if b.dir.admit(cmds...) {
		return b.dir.doMultiAdmitted(ctx, b.Client, cmds)
	}
	c := b.calls.Get().(*call)
	c.ctx, c.cmds, c.pool = ctx, cmds, b.calls
	if !b.start(done, c) {
		return failed(b.why(ctx))
	}
	rs := c.rs
	c.release()
	return rs
}

// why a call was given up on: its context, or a connection not draining.
func (b bounded) why(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return errNotDraining
}

// Nodes bounds the per-node clients too (a SCAN over every primary).
func (b bounded) Nodes() map[string]rueidis.Client {
	nodes := b.Client.Nodes()
	out := make(map[string]rueidis.Client, len(nodes))
	for addr, n := range nodes {
		// A node's client has its own connection: never direct.
		out[addr] = bounded{Client: n, abandoned: b.abandoned, calls: b.calls, pinAll: b.pinAll}
	}
	return out
}

// newClient is rueidis.NewClient, given up on when ctx ends first:
// rueidis dials and runs the handshake without a context, so a server that
// accepts and never answers would hold Open for the handshake's timeout.
// A client that connects after ctx ended is closed. The error of a
// give-up wraps ctx's.
func newClient(ctx context.Context, o rueidis.ClientOption) (rueidis.Client, error) {
	type res struct {
		cl  rueidis.Client
		err error
	}
	ch := make(chan res, 1)
	go func() {
		cl, err := rueidis.NewClient(o)
		ch <- res{cl, err}
	}()
	select {
	case r := <-ch:
		return r.cl, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil {
				r.cl.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
