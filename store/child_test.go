package store_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// runChild runs this test binary with -test.run=^name$ and env, and returns
// its stdout. It fails the test if the child fails or takes over a minute.
func runChild(t *testing.T, name string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\nstdout: %s", name, err, out)
	}
	return string(out)
}
