// Package faultproxy puts a real TCP proxy with injectable faults between a
// client under test and a redis-server: github.com/Shopify/toxiproxy/v2,
// run in-process, not as a separate binary. A test starts a Proxy for an
// upstream address, points its client at Proxy.Addr, and adds and removes
// faults (toxics) while the client runs: latency with jitter, a blackhole
// (bytes dropped, connection kept open), a reset (TCP RST), slow bandwidth,
// slicing into small delayed segments, each in one direction. ListenSilent
// gives a blackholed address: a listener that accepts and never answers.
//
// # Lanes: which connections a fault hits
//
// A toxiproxy proxy applies a toxic to every connection it carries, the open
// ones and the ones accepted later; it cannot pick one connection. So a
// Proxy accepts the client's connections itself and hands each to a lane,
// by the order it was accepted in (Options.Route): each lane is a toxiproxy
// proxy of its own to the same upstream, and a fault is added to one lane.
// With Route ByIndex("cache", "herd"), the first connection a client opens
// is in lane "cache" and every later one in lane "herd"; a Route closing
// over a flag puts connections accepted after some point in another lane.
//
// What it can target, for thermos (seen on one Redis): a tiered.Cache
// opens one connection at Open, rueidis's pipe, and sends every data
// command, lease script and fenced write on it and receives its
// invalidations on it; the herd takes further connections from rueidis's
// dedicated pool only when it needs them (a waiter's subscription, its
// transactions), so they are accepted later, and with two caches on one
// proxy the second cache's pipe comes between. A lane can hold the cache's
// pipe alone or the herd's connections alone. What it cannot target: the
// tracking traffic apart from the data traffic, since they share the pipe
// (Downstream toxics hit replies and invalidation pushes alike, Upstream
// ones only commands); nor are the herd's connections free of tracking:
// rueidis sets every connection up alike, with CLIENT TRACKING BCAST, and
// calls the cache's invalidation callback with nil (an epoch bump: every
// entry unverified) when any of them closes. It cannot pick a connection by
// what it carries rather than by when it was accepted (after a reconnect
// the new pipe is a new, later connection: Route must allow for it), nor
// proxy a Redis Cluster, whose nodes announce their own addresses, so that
// clients dial them directly.
//
// Ports are the test's own: every listener is bound on 127.0.0.1:0 and held
// until t.Cleanup closes it, with every connection and goroutine.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
)

// Some toxics (bandwidth) log through zerolog's global logger, at trace
// level, on every interruption: toxiproxy is this binary's only zerolog
// user, so silence it before any toxic runs.
func init() { log.Logger = zerolog.Nop() }

// ErrBadToxic is returned (wrapped) by Add for a toxic with invalid
// parameters, such as a negative latency.
var ErrBadToxic = errors.New("faultproxy: bad toxic")

// ErrClosed is returned by Add and Remove once the proxy is closed.
var ErrClosed = errors.New("faultproxy: proxy closed")

// DefaultLane is the lane of every connection when Options.Route is nil.
const DefaultLane = "default"

// Direction is the way the bytes a toxic acts on travel.
type Direction int

const (
	// Downstream is server to client: replies and pushes (invalidations).
	Downstream Direction = iota
	// Upstream is client to server: commands.
	Upstream
)

func (d Direction) String() string {
	if d == Upstream {
		return "upstream"
	}
	return "downstream"
}

// Toxic is one fault, made by Latency, Blackhole, Timeout, ResetPeer,
// Bandwidth or Slicer, and added to a lane with Proxy.Add.
type Toxic struct {
	typ   string
	dir   Direction
	attrs map[string]int64
	err   error
}

func (t Toxic) String() string { return fmt.Sprintf("%s %s %v", t.typ, t.dir, t.attrs) }

func ms(d time.Duration) int64 { return d.Milliseconds() }

func bad(typ string, format string, args ...any) Toxic {
	return Toxic{typ: typ, err: fmt.Errorf("%w: %s: %s", ErrBadToxic, typ, fmt.Sprintf(format, args...))}
}

// Latency delays every chunk of bytes by latency ± jitter (uniform; whole
// milliseconds).
func Latency(dir Direction, latency, jitter time.Duration) Toxic {
	if latency < 0 || jitter < 0 || jitter > latency {
		return bad("latency", "latency %v, jitter %v: need 0 <= jitter <= latency", latency, jitter)
	}
	return Toxic{typ: "latency", dir: dir, attrs: map[string]int64{"latency": ms(latency), "jitter": ms(jitter)}}
}

// Blackhole drops every byte and keeps the connection open: a peer that
// accepted and never answers (toxiproxy's timeout toxic with timeout 0).
// Removing it closes the connections it held, whose lost bytes would have
// desynchronised the protocol; later connections pass.
func Blackhole(dir Direction) Toxic {
	return Toxic{typ: "timeout", dir: dir, attrs: map[string]int64{"timeout": 0}}
}

// Timeout drops every byte and closes the connection after d (> 0).
func Timeout(dir Direction, d time.Duration) Toxic {
	if d <= 0 {
		return bad("timeout", "timeout %v: need > 0 (Blackhole never closes)", d)
	}
	return Toxic{typ: "timeout", dir: dir, attrs: map[string]int64{"timeout": ms(d)}}
}

// ResetPeer resets the connection (TCP RST to the client) after the first
// bytes in dir arrive and after then d more (0: at once). The bytes are
// dropped.
func ResetPeer(dir Direction, after time.Duration) Toxic {
	if after < 0 {
		return bad("reset_peer", "delay %v: need >= 0", after)
	}
	return Toxic{typ: "reset_peer", dir: dir, attrs: map[string]int64{"timeout": ms(after)}}
}

// Bandwidth limits the rate to kbps kilobytes per second (> 0).
func Bandwidth(dir Direction, kbps int64) Toxic {
	if kbps <= 0 {
		return bad("bandwidth", "rate %d KB/s: need > 0", kbps)
	}
	return Toxic{typ: "bandwidth", dir: dir, attrs: map[string]int64{"rate": kbps}}
}

// Slicer cuts the stream into segments of avg ± variation bytes, each
// delayed by delay (whole microseconds): slow, fragmented delivery.
func Slicer(dir Direction, avg, variation int, delay time.Duration) Toxic {
	if avg <= 0 || variation < 0 || variation >= avg || delay < 0 {
		return bad("slicer", "size %d ± %d, delay %v: need 0 <= variation < size, delay >= 0", avg, variation, delay)
	}
	return Toxic{typ: "slicer", dir: dir, attrs: map[string]int64{
		"average_size": int64(avg), "size_variation": int64(variation), "delay": delay.Microseconds()}}
}

// Options configures a Proxy. A nil *Options is valid.
type Options struct {
	// Route names the lane of the n-th connection the proxy accepts (n
	// from 0). Nil puts every connection in DefaultLane.
	Route func(n int) string
}

// ByIndex returns a Route that puts the n-th connection in lanes[n], and
// every connection past the list in its last lane.
func ByIndex(lanes ...string) func(int) string {
	return func(n int) string {
		if len(lanes) == 0 {
			return DefaultLane
		}
		return lanes[min(n, len(lanes)-1)]
	}
}

// Proxy is a TCP proxy to one upstream with per-lane faults. Its methods
// are safe for concurrent use.
type Proxy struct {
	upstream string
	route    func(int) string
	ln       net.Listener
	api      *toxiproxy.ApiServer
	wg       sync.WaitGroup

	mu struct {
		sync.Mutex
		closed   bool
		accepted int
		lanes    map[string]*lane
		conns    map[net.Conn]bool // client side, for Close
		toxics   int               // names toxics uniquely
	}
}

// lane is one toxiproxy proxy and the faults on it.
type lane struct {
	name     string
	tp       *toxiproxy.Proxy
	accepted int
	resets   int // reset_peer toxics on the lane: close clients with RST
}

// Fault is a toxic added to a lane; Remove takes it away.
type Fault struct {
	p     *Proxy
	lane  string
	name  string
	reset bool
	once  sync.Once
	err   error
}

// Start starts a proxy to upstream (host:port) on a new loopback port. It
// is stopped, with every connection it carries, in tb.Cleanup. It fails tb
// if the port cannot be bound.
func Start(tb testing.TB, upstream string, opts *Options) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{
		upstream: upstream,
		route:    ByIndex(DefaultLane),
		ln:       ln,
		api:      toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
	}
	if opts != nil && opts.Route != nil {
		p.route = opts.Route
	}
	p.mu.lanes = map[string]*lane{}
	p.mu.conns = map[net.Conn]bool{}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the address clients dial, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstream returns the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Accepted returns how many connections the proxy has put in lane.
func (p *Proxy) Accepted(lane string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.mu.lanes[lane]; l != nil {
		return l.accepted
	}
	return 0
}

// Add adds t to lane (created if new) for the connections it carries now
// and those it will be given; it returns the Fault to remove it with. Errors:
// ErrBadToxic, ErrClosed, or toxiproxy's refusal.
func (p *Proxy) Add(laneName string, t Toxic) (*Fault, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.typ == "" {
		return nil, fmt.Errorf("%w: the zero Toxic", ErrBadToxic)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l, err := p.laneLocked(laneName)
	if err != nil {
		return nil, err
	}
	p.mu.toxics++
	name := fmt.Sprintf("%s-%d", t.typ, p.mu.toxics)
	body, err := json.Marshal(map[string]any{
		"name": name, "type": t.typ, "stream": t.dir.String(), "toxicity": 1.0, "attributes": t.attrs,
	})
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	if _, err := l.tp.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		return nil, fmt.Errorf("faultproxy: add %v to lane %q: %w", t, laneName, err)
	}
	reset := t.typ == "reset_peer"
	if reset {
		l.resets++
	}
	return &Fault{p: p, lane: laneName, name: name, reset: reset}, nil
}

// Remove takes the fault away: bytes flow normally again on the lane (a
// Blackhole's connections are closed, see Blackhole). It is safe to call
// twice; later calls return the first's result.
func (f *Fault) Remove() error {
	f.once.Do(func() {
		p := f.p
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.mu.closed {
			f.err = ErrClosed
			return
		}
		l := p.mu.lanes[f.lane]
		if err := l.tp.Toxics.RemoveToxic(context.Background(), f.name); err != nil {
			f.err = fmt.Errorf("faultproxy: remove %s: %w", f.name, err)
			return
		}
		if f.reset {
			l.resets--
		}
	})
	return f.err
}

// laneLocked returns the lane named name, starting its toxiproxy proxy if
// it is new. p.mu is held.
func (p *Proxy) laneLocked(name string) (*lane, error) {
	if p.mu.closed {
		return nil, ErrClosed
	}
	if l := p.mu.lanes[name]; l != nil {
		return l, nil
	}
	tp := toxiproxy.NewProxy(p.api, name, "127.0.0.1:0", p.upstream)
	if err := tp.Start(); err != nil {
		return nil, fmt.Errorf("faultproxy: start lane %q: %w", name, err)
	}
	l := &lane{name: name, tp: tp}
	p.mu.lanes[name] = l
	return l, nil
}

// accept hands every client connection to its lane.
func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		n := p.mu.accepted
		p.mu.accepted++
		l, err := p.laneLocked(p.route(n))
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		l.accepted++
		p.mu.conns[c] = true
		addr := l.tp.Listen // toxiproxy wrote the bound port back
		p.mu.Unlock()
		p.wg.Add(1)
		go p.splice(c, l, addr)
	}
}

// splice copies between the client and its lane's toxiproxy listener until
// either side ends, then closes both: with an RST to the client when the
// lane side was reset or the lane has a reset_peer toxic (toxiproxy sets no
// RST on connections that were open when the toxic came).
func (p *Proxy) splice(c net.Conn, l *lane, addr string) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.mu.conns, c)
		p.mu.Unlock()
	}()
	u, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	done := make(chan error, 2)
	go func() { _, err := io.Copy(u, c); done <- err }()
	go func() { _, err := io.Copy(c, u); done <- err }()
	err = <-done
	p.mu.Lock()
	reset := l.resets > 0
	p.mu.Unlock()
	if reset || isReset(err) {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	c.Close()
	u.Close()
	<-done
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// Close stops the proxy: the listener, every lane and every connection. It
// is safe to call twice.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	p.mu.closed = true
	p.ln.Close()
	for c := range p.mu.conns {
		c.Close()
	}
	lanes := p.mu.lanes
	p.mu.Unlock()
	for _, l := range lanes {
		l.tp.Stop()
	}
	p.wg.Wait()
}
