package faultproxy

import (
	"net"
	"sync"
	"testing"
)

// Silent is a blackholed address: a listener on a loopback port of its own
// that accepts every connection and never reads from it or answers, like a
// frozen server or a silent partition after the handshake. Its
// connections stay open until tb's cleanup.
type Silent struct {
	ln net.Listener
	wg sync.WaitGroup

	mu struct {
		sync.Mutex
		conns    []net.Conn
		accepted int
		closed   bool
	}
}

// ListenSilent starts a Silent listener on 127.0.0.1:0, closed with its
// connections in tb.Cleanup. It fails tb if the port cannot be bound.
func ListenSilent(tb testing.TB) *Silent {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	s := &Silent{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.mu.closed {
				c.Close()
			} else {
				s.mu.conns = append(s.mu.conns, c)
				s.mu.accepted++
			}
			s.mu.Unlock()
		}
	}()
	tb.Cleanup(s.Close)
	return s
}

// Addr returns the listener's address, 127.0.0.1:port.
func (s *Silent) Addr() string { return s.ln.Addr().String() }

// Accepted returns how many connections it has accepted.
func (s *Silent) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.accepted
}

// Close closes the listener and every connection. It is safe to call twice.
func (s *Silent) Close() {
	s.mu.Lock()
	s.mu.closed = true
	conns := s.mu.conns
	s.mu.conns = nil
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}
