package herd

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// One renewer goroutine per Group keeps every lease this process holds
// alive: a load that ends before LeaseTTL/3 costs no goroutine, timer or
// Redis call for its lease. The goroutine starts with the first lease, sleeps
// until the earliest renewal is due (or, with no lease held, until one is
// taken), and ends on Close.

// lease is one held lease while its holder runs load. It lives in the
// flight; the renewer reaches it through renewer.leases.
type lease struct {
	k     keys
	token string
	due   time.Time   // next renewal; guarded by renewer.mu
	lost  atomic.Bool // a renewal found the token no longer holding the lock
}

type renewer struct {
	mu      sync.Mutex
	leases  map[*lease]struct{}
	running bool      // the goroutine was started
	wake    time.Time // when the goroutine wakes next; zero: idle until kicked
	kick    chan struct{}
}

// renewSlack lets leases due within LeaseTTL/renewSlack of the earliest be
// renewed with it, so leases taken close together share a wake-up.
const renewSlack = 12

// startRenewing registers l for renewal every LeaseTTL/3 until
// stopRenewing.
func (g *Group) startRenewing(l *lease) {
	if g.renewHook != nil && !g.renewHook() {
		return // the test pauses this holder past its lease
	}
	g.ren.mu.Lock()
	l.due = time.Now().Add(g.o.LeaseTTL / 3)
	g.ren.leases[l] = struct{}{}
	kick := g.ren.wake.IsZero() || l.due.Before(g.ren.wake)
	if !g.ren.running {
		g.ren.running = true
		g.wg.Add(1)
		go g.renewLoop()
	}
	g.ren.mu.Unlock()
	if kick {
		select {
		case g.ren.kick <- struct{}{}:
		default:
		}
	}
}

// stopRenewing unregisters l and reports whether a renewal found the lease
// lost. A renewal still on its way may reach Redis after this: it extends
// the lock only while l's token holds it, so it is harmless, and its verdict
// is ignored.
func (g *Group) stopRenewing(l *lease) bool {
	g.ren.mu.Lock()
	delete(g.ren.leases, l)
	g.ren.mu.Unlock()
	return l.lost.Load()
}

func (g *Group) renewLoop() {
	defer g.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	var due []*lease
	for {
		due = due[:0]
		g.ren.mu.Lock()
		now := time.Now()
		horizon := now.Add(g.o.LeaseTTL / renewSlack)
		var next time.Time
		for l := range g.ren.leases {
			if !l.due.After(horizon) {
				due = append(due, l)
			} else if next.IsZero() || l.due.Before(next) {
				next = l.due
			}
		}
		if len(due) > 0 {
			next = now // busy: a lease taken meanwhile is due later
		}
		g.ren.wake = next
		g.ren.mu.Unlock()
		if len(due) > 0 {
			g.renewDue(due)
			continue
		}
		var tc <-chan time.Time
		if !next.IsZero() {
			t.Reset(time.Until(next))
			tc = t.C
		}
		select {
		case <-tc:
		case <-g.ren.kick:
		case <-g.ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// renewDue renews each of due, each with its own timeout of LeaseTTL/3,
// concurrently when there are several.
func (g *Group) renewDue(due []*lease) {
	if len(due) == 1 {
		g.renewOne(due[0])
		return
	}
	var wg sync.WaitGroup
	for _, l := range due {
		wg.Go(func() { g.renewOne(l) })
	}
	wg.Wait()
}

func (g *Group) renewOne(l *lease) {
	sent := time.Now()
	ctx, cancel := context.WithTimeout(g.ctx, g.o.LeaseTTL/3)
	ok, err := g.renew(ctx, l.k, l.token)
	cancel()
	g.ren.mu.Lock()
	defer g.ren.mu.Unlock()
	if _, held := g.ren.leases[l]; !held {
		return // the holder is done: its verdict no longer matters
	}
	switch {
	case err != nil:
		if g.ctx.Err() != nil {
			return
		}
		g.o.Logger.Warn("herd: lease renewal failed", "lock", l.k.lock, "err", err)
		l.due = time.Now().Add(g.o.LeaseTTL / 3)
	case ok:
		g.stats.lockRenewals.Add(1)
		l.due = sent.Add(g.o.LeaseTTL / 3)
	default:
		g.stats.lockLosses.Add(1)
		l.lost.Store(true)
		delete(g.ren.leases, l)
	}
}
