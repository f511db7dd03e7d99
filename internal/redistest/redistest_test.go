package redistest

import (
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
