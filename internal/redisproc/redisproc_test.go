package redisproc

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestStartRestartClose(t *testing.T) {
	s, err := Start(context.Background(), &Options{Persist: true})
	if errors.Is(err, ErrNotFound) && os.Getenv("THERMOS_SKIP_REDIS") == "1" {
		t.Skip("redis-server not installed and THERMOS_SKIP_REDIS=1")
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if _, err := s.Do("SET", "k", "v1"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Kill()
	if s.Running() {
		t.Fatal("Running after Kill")
	}
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Do("GET", "k"); err != nil || got != "v1" {
		t.Errorf("GET after restart = %q, %v, want v1 (persisted)", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if s.Running() {
		t.Error("Running after Close")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("own directory %s still exists after Close (err %v)", dir, err)
	}
}

func TestStartErrors(t *testing.T) {
	_, err := Start(context.Background(), &Options{Binary: "/nonexistent/redis-server", Dir: t.TempDir()})
	if err == nil {
		t.Fatal("Start with a missing binary succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, &Options{Args: []string{"--this-is-not-an-option", "x"}, Dir: t.TempDir()}); err == nil {
		t.Fatal("Start with a bad argument succeeded")
	}
}
