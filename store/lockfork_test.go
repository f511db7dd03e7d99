//go:build unix

package store

import (
	"context"
	"errors"
	"os/exec"
	"sync"
	"testing"
)

// TestReopenWhileForking: Close then Open of the same directory succeeds
// while other goroutines start processes. A child forked while the lock
// file is open shares its flock(2) lock until it execs; closing the file in
// that window left the lock held by the child, and the reopen right after
// Close failed with ErrLocked (seen in TestGuardTTLCapAfterRestart, whose
// parallel subtests each start a redis-server).
var forkers = 4

func TestReopenWhileForking(t *testing.T) {
	sh, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to start")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range forkers {
		wg.Go(func() {
			for ctx.Err() == nil {
				_ = exec.Command(sh).Run()
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	for i := range 60 {
		db, err := Open(dir, &Options{Durability: NoSync})
		if err != nil {
			if errors.Is(err, ErrLocked) {
				t.Fatalf("reopen %d after Close: %v", i, err)
			}
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
