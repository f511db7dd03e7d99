package tiered

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashDirEnv  = "THERMOS_TIERED_CRASH_DIR"
	crashSyncEnv = "THERMOS_TIERED_CRASH_SYNC"
	crashKeys    = 200
	crashRuns    = 10
)

func crashOptions(dir string, sync bool) *Options {
	return &Options{Dir: dir, SyncWrites: sync, Logger: quietLog,
		Routes: []Route{{Prefix: "c:", Tiers: Memory | Disk, TTL: time.Hour, Beta: -1}}}
}

// TestCrashChild is the child half of TestCrashAcknowledgedWrites: it
// loads crashKeys keys (version 0, from the loader), then overwrites them
// with growing versions, round robin, and prints "key version unixnano"
// after each Set returned nil. The loads matter: a queued fill must never
// land over a later acknowledged write.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child of TestCrashAcknowledgedWrites only")
	}
	c, err := Open(context.Background(), crashOptions(dir, os.Getenv(crashSyncEnv) == "1"))
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "READY")
	out.Flush()
	ctx := context.Background()
	zero := LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("0"), nil })
	for i := range crashKeys {
		if _, _, err := c.GetOrLoad(ctx, fmt.Sprintf("c:%03d", i), zero); err != nil {
			fmt.Fprintln(out, "LOAD-ERROR", err)
			out.Flush()
			os.Exit(3)
		}
	}
	for v := 1; ; v++ {
		for i := range crashKeys {
			k := fmt.Sprintf("c:%03d", i)
			if err := c.Set(ctx, k, []byte(strconv.Itoa(v)), 0); err != nil {
				fmt.Fprintln(out, "SET-ERROR", err)
				out.Flush()
				os.Exit(3)
			}
			fmt.Fprintln(out, k, v, time.Now().UnixNano())
			out.Flush()
		}
	}
}

// TestCrashAcknowledgedWrites SIGKILLs a process writing through a
// Memory|Disk route at random points, reopens the directory and compares
// every key with the last write the process acknowledged. With SyncWrites
// no acknowledged write may be missing or older; without it, only writes
// acknowledged within the stated window before the kill may be.
func TestCrashAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for _, sync := range []bool{true, false} {
		t.Run(fmt.Sprintf("sync=%v", sync), func(t *testing.T) {
			var lost, checked int
			var worst time.Duration
			for run := range crashRuns {
				dir := t.TempDir()
				killAt := 300 + rng.IntN(2000)
				acked, ackedAt, killed := runTieredCrashChild(t, dir, sync, killAt, time.Duration(rng.Int64N(int64(3*time.Millisecond))))
				c := openT(t, crashOptions(dir, sync))
				for k, v := range acked {
					checked++
					got, ok, err := c.Get(context.Background(), k)
					n, _ := strconv.Atoi(string(got))
					if err == nil && ok && n >= v {
						continue
					}
					lost++
					age := killed.Sub(ackedAt[k])
					worst = max(worst, age)
					if sync {
						t.Errorf("run %d: %s acknowledged at version %d, read %q, %v, %v after the kill", run, k, v, got, ok, err)
					}
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d runs, %d keys checked, %d missing or older; oldest lost acknowledgement %v before the kill", crashRuns, checked, lost, worst)
			if !sync && worst > crashLossWindow {
				t.Errorf("lost a write acknowledged %v before the kill, beyond the stated window of %v", worst, crashLossWindow)
			}
		})
	}
}

// crashLossWindow is how old a lost acknowledgement may be without
// SyncWrites: the write-behind interval, plus time for the batch to commit
// and for a loaded machine to schedule the flusher.
const crashLossWindow = DefaultWriteBehind + 500*time.Millisecond

// runTieredCrashChild starts the child, SIGKILLs it delay after killAt
// acknowledged writes and returns the last acknowledged version of each key,
// when it was acknowledged, and when the kill was sent.
func runTieredCrashChild(t *testing.T, dir string, sync bool, killAt int, delay time.Duration) (map[string]int, map[string]time.Time, time.Time) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	env := crashDirEnv + "=" + dir
	cmd.Env = append(os.Environ(), env, crashSyncEnv+"="+map[bool]string{true: "1", false: "0"}[sync])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	acked := make(map[string]int)
	at := make(map[string]time.Time)
	var killed time.Time
	n := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "READY":
		case len(f) == 3 && strings.HasPrefix(f[0], "c:"):
			v, _ := strconv.Atoi(f[1])
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			acked[f[0]], at[f[0]] = v, time.Unix(0, ns)
			if n++; n == killAt {
				killed = time.Now().Add(delay)
				time.AfterFunc(delay, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
			}
		case len(f) == 0 || f[0] == "PASS" || f[0] == "ok":
		default:
			t.Fatalf("child printed %q", sc.Text())
		}
	}
	_ = cmd.Wait()
	if killed.IsZero() {
		t.Fatalf("child ended after %d acknowledged writes, before the kill", n)
	}
	return acked, at, killed
}
