package herd

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// notifier owns the Group's notification connection: one dedicated Redis
// connection, opened on the first wait, on which a channel is subscribed
// while at least one flight of this process waits on it.
//
// Lock order: sendMu before mu. sendMu serialises state changes together
// with the SUBSCRIBE/UNSUBSCRIBE they cause, so the order of commands on the
// wire is the order of state changes. The pub/sub hooks take only mu.
type notifier struct {
	g *Group

	sendMu sync.Mutex

	mu struct {
		sync.Mutex
		closed bool
		conn   *subConn // nil until the first subscribe and after a drop
	}
}

// subConn is one dedicated pub/sub connection and what it subscribes.
type subConn struct {
	dc      rueidis.DedicatedClient
	release func()
	// chans holds, per subscribed channel, the flights waiting on it.
	// Guarded by notifier.mu.
	chans map[string]*chanState
	// pending holds, per channel, one confirmation per SUBSCRIBE sent and not
	// yet confirmed, oldest first; a "subscribe" event closes the oldest.
	// It survives the channel's waiters leaving, so events stay matched.
	pending map[string][]chan struct{}
}

type chanState struct {
	waiters map[*subscription]struct{}
	ready   chan struct{} // closed when the server confirmed the subscription
}

// subscription is one flight's registration on a channel. c receives a
// signal per notification (coalesced).
type subscription struct {
	n       *notifier
	conn    *subConn
	channel string
	c       chan struct{}
}

// subscribeTimeout bounds a SUBSCRIBE or UNSUBSCRIBE round trip.
const subscribeTimeout = 5 * time.Second

// subscribe registers a waiter on channel and returns once the server has
// confirmed the subscription, so any PUBLISH it processes afterwards reaches
// the waiter. The caller must close the subscription.
func (n *notifier) subscribe(ctx context.Context, channel string) (*subscription, error) {
	n.sendMu.Lock()
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		n.sendMu.Unlock()
		return nil, ErrClosed
	}
	conn := n.mu.conn
	if conn == nil {
		conn = n.openLocked()
	}
	s := &subscription{n: n, conn: conn, channel: channel, c: make(chan struct{}, 1)}
	cs := conn.chans[channel]
	send := cs == nil
	if send {
		ready := make(chan struct{})
		cs = &chanState{waiters: make(map[*subscription]struct{}), ready: ready}
		conn.chans[channel] = cs
		conn.pending[channel] = append(conn.pending[channel], ready)
	}
	cs.waiters[s] = struct{}{}
	ready := cs.ready
	n.mu.Unlock()
	var err error
	if send {
		sctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
		err = conn.dc.Do(sctx, conn.dc.B().Subscribe().Channel(channel).Build()).Error()
		cancel()
	}
	n.sendMu.Unlock()
	if err != nil {
		s.close()
		return nil, fmt.Errorf("herd: subscribe: %w", err)
	}
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		s.close()
		return nil, ctx.Err()
	}
}

// openLocked dedicates a connection to notifications and starts the
// goroutine that notices its loss. REQUIRES: n.mu held.
func (n *notifier) openLocked() *subConn {
	dc, release := n.g.client.Dedicate()
	conn := &subConn{dc: dc, release: release,
		chans: make(map[string]*chanState), pending: make(map[string][]chan struct{})}
	errc := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage:      func(m rueidis.PubSubMessage) { n.onMessage(conn, m) },
		OnSubscription: func(s rueidis.PubSubSubscription) { n.onSubscription(conn, s) },
	})
	n.mu.conn = conn
	n.g.wg.Add(1)
	go n.watch(conn, errc)
	return conn
}

// watch waits for the connection to drop or the Group to close. On a drop it
// forgets the connection and wakes every waiter, which look at the lease
// again and subscribe anew on the next wait.
func (n *notifier) watch(conn *subConn, errc <-chan error) {
	defer n.g.wg.Done()
	select {
	case err, ok := <-errc:
		if ok && err != nil {
			n.g.o.Logger.Warn("herd: notification connection lost", "err", err)
		}
	case <-n.g.ctx.Done():
		return // close releases the connection
	}
	n.mu.Lock()
	if n.mu.conn == conn {
		n.mu.conn = nil
	}
	n.dropLocked(conn)
	n.mu.Unlock()
	conn.release()
}

// dropLocked wakes every waiter and confirmation of conn. REQUIRES: n.mu held.
func (n *notifier) dropLocked(conn *subConn) {
	for _, cs := range conn.chans {
		for s := range cs.waiters {
			s.signal()
		}
	}
	for ch, ps := range conn.pending {
		for _, p := range ps {
			close(p)
		}
		delete(conn.pending, ch)
	}
	clear(conn.chans)
}

func (n *notifier) onSubscription(conn *subConn, s rueidis.PubSubSubscription) {
	if s.Kind != "subscribe" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ps := conn.pending[s.Channel]; len(ps) > 0 {
		close(ps[0])
		if len(ps) == 1 {
			delete(conn.pending, s.Channel)
		} else {
			conn.pending[s.Channel] = ps[1:]
		}
	}
}

func (n *notifier) onMessage(conn *subConn, m rueidis.PubSubMessage) {
	if sent, err := strconv.ParseInt(m.Message, 10, 64); err == nil {
		n.g.stats.wakeLatency.record(time.Duration(time.Now().UnixNano() - sent))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if cs := conn.chans[m.Channel]; cs != nil {
		for s := range cs.waiters {
			s.signal()
		}
	}
}

func (s *subscription) signal() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// close unregisters the waiter and unsubscribes the channel when it was the
// last one. Safe on a subscription whose connection dropped.
func (s *subscription) close() {
	n := s.n
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	n.mu.Lock()
	cs := s.conn.chans[s.channel]
	last := false
	if cs != nil {
		delete(cs.waiters, s)
		if len(cs.waiters) == 0 {
			delete(s.conn.chans, s.channel)
			last = n.mu.conn == s.conn && !n.mu.closed
		}
	}
	n.mu.Unlock()
	if last {
		ctx, cancel := context.WithTimeout(n.g.ctx, subscribeTimeout)
		defer cancel()
		// An error here means the connection is going; watch cleans up.
		_ = s.conn.dc.Do(ctx, s.conn.dc.B().Unsubscribe().Channel(s.channel).Build()).Error()
	}
}

// close releases the connection. The Group's goroutines have stopped.
func (n *notifier) close() {
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	n.mu.Lock()
	n.mu.closed = true
	conn := n.mu.conn
	n.mu.conn = nil
	if conn != nil {
		n.dropLocked(conn)
	}
	n.mu.Unlock()
	if conn != nil {
		conn.release()
	}
}
