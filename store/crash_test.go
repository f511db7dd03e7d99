package store_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thermoscache/thermos/store"
)

const (
	crashDirEnv  = "THERMOS_STORE_CRASH_DIR"
	crashSeedEnv = "THERMOS_STORE_CRASH_SEED"
	crashWrites  = 10_000
	crashRuns    = 20
)

// crashValue is the value the child writes under key i in run r.
func crashValue(run, i int) string {
	return fmt.Sprintf("run%d-value%d-%s", run, i, strings.Repeat("x", i%97))
}

// TestCrashChild is the child half of TestCrash: it performs up to
// crashWrites synced writes, mixing single Sets and batches, and prints each
// key only after the write returned.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child of TestCrash only")
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	run := int(seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	db, err := store.Open(dir, &store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	fmt.Fprintln(out, "READY")
	out.Flush()
	for i := 0; i < crashWrites; {
		if rng.IntN(3) == 0 {
			n := 1 + rng.IntN(16)
			b := db.NewBatch()
			var keys []int
			for j := 0; j < n && i < crashWrites; j++ {
				if err := b.Set(fmt.Sprintf("k%05d", i), []byte(crashValue(run, i)), 0); err != nil {
					fmt.Println("BATCH-ERROR", err)
					os.Exit(2)
				}
				keys = append(keys, i)
				i++
			}
			if err := b.Commit(ctx); err != nil {
				fmt.Println("COMMIT-ERROR", err)
				os.Exit(2)
			}
			for _, k := range keys {
				fmt.Fprintf(out, "k%05d\n", k)
			}
		} else {
			if err := db.Set(ctx, fmt.Sprintf("k%05d", i), []byte(crashValue(run, i)), 0); err != nil {
				fmt.Println("SET-ERROR", err)
				os.Exit(2)
			}
			fmt.Fprintf(out, "k%05d\n", i)
			i++
		}
		out.Flush() // the parent sees the key only after the write returned
	}
	fmt.Fprintln(out, "DONE")
	out.Flush()
	// Wait for the kill instead of exiting: on a loaded machine the parent
	// may read the ack it kills at after the last write, and a child that
	// closed the store and exited meanwhile would make that run a clean
	// shutdown instead of a crash. The parent never closes stdin.
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = db.Close()
}

// TestCrash SIGKILLs a child writing synced entries at random moments and
// checks that every write it acknowledged is on disk with the right value.
//
// Kill points are drawn as a number of acknowledged writes (uniform up to
// what the child manages in about a second, measured by a first calibration
// run, at most crashWrites) plus a random delay of up to 2ms, so the kill
// lands at an arbitrary point inside a write, and the test stays around 20s
// whatever the disk's fsync speed.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THERMOS_STORE_CRASH_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set THERMOS_STORE_CRASH_TEST_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	const calibration = 1000
	maxKill := calibration
	var total, lostTotal int
	kills := map[int]bool{}
	for run := range crashRuns + 1 {
		dir := filepath.Join(t.TempDir(), "db")
		killAt := calibration
		if run > 0 {
			killAt = 1 + rng.IntN(maxKill)
		}
		delay := time.Duration(rng.Int64N(int64(2 * time.Millisecond)))
		acked, done, elapsed := runCrashChild(t, dir, uint64(run), killAt, delay)
		if done {
			// Still a crash: the child waits for the kill after its last
			// write (TestCrashChild), so the kill came after every write.
			t.Logf("run %d: the kill came after the child's last write", run)
		}
		if run == 0 {
			perWrite := elapsed / time.Duration(max(len(acked), 1))
			// At most half the child's writes, so that most kills land
			// inside a write even when reading the acks lags behind.
			maxKill = min(crashWrites/2, max(200, int(time.Second/max(perWrite, time.Microsecond))))
			t.Logf("calibration: %v per synced write; kill points drawn in [1, %d]", perWrite, maxKill)
		}
		kills[len(acked)] = true
		db, err := store.Open(dir, &store.Options{Logger: quietLogger(t)})
		if err != nil {
			t.Fatalf("run %d: reopen after kill: %v", run, err)
		}
		lost := 0
		for _, i := range acked {
			e, ok, err := db.Get(context.Background(), fmt.Sprintf("k%05d", i))
			if err != nil || !ok || string(e.Value) != crashValue(run, i) {
				lost++
				if lost <= 5 {
					t.Errorf("run %d (seed %d): acknowledged k%05d: got %q, %v, %v", run, seed, i, e.Value, ok, err)
				}
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		total += len(acked)
		lostTotal += lost
		t.Logf("run %d: kill after %d acks + %v: %d acknowledged, %d lost", run, killAt, delay, len(acked), lost)
	}
	if lostTotal != 0 {
		t.Fatalf("lost %d of %d acknowledged writes (seed %d)", lostTotal, total, seed)
	}
	if len(kills) < crashRuns/2 {
		t.Fatalf("only %d distinct kill points in %d runs", len(kills), crashRuns+1)
	}
	t.Logf("%d runs, %d distinct kill points, %d acknowledged writes checked, 0 lost", crashRuns+1, len(kills), total)
}

// runCrashChild starts the child, SIGKILLs it delay after it has
// acknowledged killAt writes, and returns the keys it acknowledged and the
// time from its first write to the kill.
func runCrashChild(t *testing.T, dir string, run uint64, killAt int, delay time.Duration) (acked []int, done bool, elapsed time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashSeedEnv+"="+strconv.FormatUint(run, 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	// A pipe this side holds open until the child is dead: the child waits
	// on it after its last write.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var start, killed time.Time
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "READY":
			start = time.Now()
		case line == "DONE":
			done = true
		case strings.HasPrefix(line, "k"):
			i, err := strconv.Atoi(line[1:])
			if err != nil {
				t.Fatalf("child printed %q", line)
			}
			acked = append(acked, i)
			if len(acked) == killAt {
				killed = time.Now().Add(delay)
				time.AfterFunc(delay, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
			}
		case line == "PASS" || strings.HasPrefix(line, "ok ") || line == "":
		default:
			t.Fatalf("child printed %q", line)
		}
	}
	_ = cmd.Wait()
	if killed.IsZero() {
		killed = time.Now()
	}
	return acked, done, killed.Sub(start)
}
