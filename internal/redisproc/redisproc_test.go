package redisproc

import (
	"context"
	"errors"
	"os"
	"strings"
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

func TestStartCluster(t *testing.T) {
	if _, err := Binary(); err != nil && os.Getenv("THERMOS_SKIP_REDIS") == "1" {
		t.Skip("redis-server not installed and THERMOS_SKIP_REDIS=1")
	}
	c, err := StartCluster(context.Background(), &ClusterOptions{Args: []string{"--requirepass", "cluster-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	nodes := c.Nodes()
	if len(nodes) != DefaultClusterPrimaries || len(c.Addrs()) != DefaultClusterPrimaries {
		t.Fatalf("%d nodes, %d addresses; want %d of each", len(nodes), len(c.Addrs()), DefaultClusterPrimaries)
	}
	for _, n := range nodes {
		if n.Port() > MaxClusterPort {
			t.Errorf("node port %d > %d: its bus port is out of range", n.Port(), MaxClusterPort)
		}
		info, err := n.Do("CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_size:3") {
			t.Errorf("CLUSTER INFO on %s = %q, %v; want cluster_state:ok and 3 primaries", n.Addr(), info, err)
		}
	}
	dir := nodes[0].Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, n := range nodes {
		if n.Running() {
			t.Errorf("node %s running after Close", n.Addr())
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("node directory %s still exists after Close (err %v)", dir, err)
	}
}

func TestStartClusterErrors(t *testing.T) {
	tests := []struct {
		name string
		opts *ClusterOptions
		want error
	}{
		{"two primaries", &ClusterOptions{Primaries: 2}, ErrClusterOptions},
		{"negative replicas", &ClusterOptions{Replicas: -1}, ErrClusterOptions},
		{"directories", &ClusterOptions{Dirs: []string{t.TempDir()}}, ErrClusterOptions},
	}
	for _, tt := range tests {
		if _, err := StartCluster(context.Background(), tt.opts); !errors.Is(err, tt.want) {
			t.Errorf("%s: StartCluster error = %v, want %v", tt.name, err, tt.want)
		}
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := StartCluster(context.Background(), &ClusterOptions{Binary: "/nonexistent/redis-server"}); !errors.Is(err, ErrCLINotFound) {
		t.Errorf("StartCluster without redis-cli on PATH: error = %v, want ErrCLINotFound", err)
	}
}
