package redistest

import (
	"strconv"
	"testing"
)

func TestStartKillRestart(t *testing.T) {
	s := Start(t, &Options{Persist: true})
	if _, err := s.Do("SET", "k", "v1"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Kill()
	if s.Running() {
		t.Fatal("Running after Kill")
	}
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Restart()
	got, err := s.Do("GET", "k")
	if err != nil || got != "v1" {
		t.Fatalf("GET after restart with Persist = %q, %v; want v1", got, err)
	}
	if out := s.CLI("GET", "k"); out != "v1" {
		t.Fatalf("redis-cli GET = %q, want v1", out)
	}
}

func TestNoPersistLosesData(t *testing.T) {
	s := Start(t, nil)
	if _, err := s.Do("SET", "k", "v1"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	got, err := s.Do("GET", "k")
	if err != nil {
		t.Fatal(err)
	}
	if got != "" {
		t.Fatalf("GET after restart without Persist = %q, want nil", got)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t, &Options{Args: []string{"--requirepass", "sekrit"}})
	s.Pause()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("paused server answered PING")
	}
	s.Resume()
	if _, err := s.Do("PING"); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := Start(t, nil), Start(t, nil)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	if _, err := a.Do("SET", "k", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Do("GET", "k"); got != "" {
		t.Fatalf("b sees a's key: %q", got)
	}
}

// TestServersAreTheirOwn: whatever answers on a server's ports is the
// process Start (or Restart) launched: INFO server's process_id over the
// plain port, and over the TLS port with the server's own CA.
func TestServersAreTheirOwn(t *testing.T) {
	s := Start(t, nil)
	if got := s.Info("server", "process_id"); got != strconv.Itoa(s.PID()) {
		t.Fatalf("process_id %s, want %d", got, s.PID())
	}
	first := s.PID()
	s.Restart()
	if got := s.Info("server", "process_id"); got != strconv.Itoa(s.PID()) || s.PID() == first {
		t.Fatalf("after Restart process_id %s, PID %d; want the new process (first was %d)", got, s.PID(), first)
	}
	tl := StartTLS(t, &Options{Args: []string{"--requirepass", "pw"}})
	if pid, err := tl.tlsPID(); err != nil || pid != tl.PID() {
		t.Fatalf("over TLS process_id %d, %v; want %d", pid, err, tl.PID())
	}
	if tl.TLSAddr() == tl.Addr() {
		t.Fatalf("TLS and plain listeners share %s", tl.Addr())
	}
	tl.Restart()
	if pid, err := tl.tlsPID(); err != nil || pid != tl.PID() {
		t.Fatalf("over TLS after Restart process_id %d, %v; want %d", pid, err, tl.PID())
	}
}
