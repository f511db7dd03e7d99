package herd

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// One renewer goroutine per Group keeps every lease this process holds
// alive: a load that ends before LeaseTTL/3 costs no goroutine, wake-up or
// Redis call for its lease. The goroutine starts with the first lease, sleeps
// on its timer until the earliest renewal is due, and ends on Close. A
// lease due before that timer sets it earlier itself instead of waking the
// goroutine: a hand-off per lease taken would cost a cold load about as
// much as a tenth of its CPU, where a timer reset costs no wake-up.

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
	wake    time.Time // when timer fires next; zero: stopped, idle
	timer   *time.Timer
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
	defer g.ren.mu.Unlock()
	now := time.Now()
	l.due = now.Add(g.o.LeaseTTL / 3)
	g.ren.leases[l] = struct{}{}
	if !g.ren.running {
		g.ren.running = true
		g.ren.timer = time.NewTimer(l.due.Sub(now))
		g.ren.wake = l.due
		g.wg.Add(1)
		go g.renewLoop()
		return
	}
	if g.ren.wake.IsZero() || l.due.Before(g.ren.wake) {
		g.ren.timer.Reset(l.due.Sub(now))
		g.ren.wake = l.due
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

// renewLoop renews what is due whenever the timer fires. The timer is set
// only under ren.mu (by the loop, or by startRenewing for an earlier
// lease), so a reset never races the loop's own; a firing that finds
// nothing due just sets it again, or leaves it stopped.
func (g *Group) renewLoop() {
	defer g.wg.Done()
	var due []*lease
	for {
		select {
		case <-g.ren.timer.C:
		case <-g.ctx.Done():
			g.ren.mu.Lock()
			g.ren.timer.Stop()
			g.ren.mu.Unlock()
			return
		}
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
				// Busy: a lease taken meanwhile is due later, and
				// the loop looks again once these are renewed.
				g.ren.timer.Stop()
				g.ren.wake = now
			} else if g.ren.wake = next; !next.IsZero() {
				g.ren.timer.Reset(next.Sub(now))
			} else {
				g.ren.timer.Stop()
			}
			g.ren.mu.Unlock()
			if len(due) == 0 {
				break
			}
			g.renewDue(due)
		}
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
