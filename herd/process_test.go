package herd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Tests in this file run the test binary again as other processes of a
// fleet (TestMain dispatches on helperModeEnv). Children die with the test
// (Pdeathsig) and are killed in t.Cleanup.
const (
	helperModeEnv = "HERD_HELPER_MODE"
	helperAddrEnv = "HERD_HELPER_ADDR"
	helperRepsEnv = "HERD_HELPER_REPS"
	helperGEnv    = "HERD_HELPER_G"
	helperIDEnv   = "HERD_HELPER_ID"
	helperLeaseMS = "HERD_HELPER_LEASE_MS"

	modeStampede = "stampede" // Do with the herd
	modeNoHerd   = "noherd"   // GET, and on a miss load and SET: no herd
	modeHolder   = "holder"   // take the lease and hang in load

	// originDelay is the stampede origin's latency.
	originDelay = 50 * time.Millisecond
	// helperWait bounds every wait of a helper or of the parent on one.
	helperWait = 60 * time.Second
)

func runHelper(mode string) int {
	if err := helper(mode); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// stampedeLoad is the origin: it counts calls in Redis and takes originDelay.
func stampedeLoad(c rueidis.Client, rep int) LoadFunc {
	return func(ctx context.Context) ([]byte, time.Duration, error) {
		if err := c.Do(ctx, c.B().Incr().Key(fmt.Sprintf("calls:%d", rep)).Build()).Error(); err != nil {
			return nil, 0, err
		}
		time.Sleep(originDelay)
		return []byte("v"), time.Minute, nil
	}
}

func helper(mode string) error {
	ctx := context.Background()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{os.Getenv(helperAddrEnv)}, DisableCache: true})
	if err != nil {
		return err
	}
	defer c.Close()
	lease := time.Duration(envInt(helperLeaseMS)) * time.Millisecond
	g, err := New(&Options{Client: c, LeaseTTL: lease, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer g.Close()

	if mode == modeHolder {
		_, err := g.Do(ctx, "victim", nil, func(ctx context.Context) ([]byte, time.Duration, error) {
			c.Do(ctx, c.B().Incr().Key("calls:victim").Build())
			c.Do(ctx, c.B().Rpush().Key("holding").Element("1").Build())
			time.Sleep(time.Hour) // until SIGKILL
			return nil, 0, nil
		})
		return err
	}

	reps, per := envInt(helperRepsEnv), envInt(helperGEnv)
	for rep := range reps {
		if err := c.Do(ctx, c.B().Blpop().Key(fmt.Sprintf("go:%d", rep)).Timeout(helperWait.Seconds()).Build()).Error(); err != nil {
			return fmt.Errorf("rep %d: wait for start: %w", rep, err)
		}
		key := fmt.Sprintf("cold:%d", rep)
		load := stampedeLoad(c, rep)
		var wg sync.WaitGroup
		errs := make(chan error, per)
		for range per {
			wg.Go(func() {
				if mode == modeNoHerd {
					_, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
					if rueidis.IsRedisNil(err) {
						v, ttl, lerr := load(ctx)
						if lerr != nil {
							errs <- lerr
							return
						}
						err = c.Do(ctx, c.B().Set().Key(key).Value(string(v)).PxMilliseconds(ttl.Milliseconds()).Build()).Error()
					}
					if err != nil {
						errs <- err
					}
					return
				}
				r, err := g.Do(ctx, key, nil, load)
				if err == nil && string(r.Value) != "v" {
					err = fmt.Errorf("got %q, want v", r.Value)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return fmt.Errorf("rep %d: %w", rep, err)
		}
		if err := c.Do(ctx, c.B().Rpush().Key(fmt.Sprintf("done:%d", rep)).Element(os.Getenv(helperIDEnv)).Build()).Error(); err != nil {
			return err
		}
	}
	return nil
}

// child is one re-executed test binary.
type child struct {
	cmd *exec.Cmd
	out bytes.Buffer
	end chan error
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	ch := &child{end: make(chan error, 1)}
	ch.cmd = exec.Command(os.Args[0], "-test.run=^$")
	ch.cmd.Env = append(os.Environ(), env...)
	ch.cmd.Stdout, ch.cmd.Stderr = &ch.out, &ch.out
	ch.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ch.cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	go func() { ch.end <- ch.cmd.Wait() }()
	t.Cleanup(func() {
		_ = ch.cmd.Process.Kill()
		<-ch.end
		ch.end <- nil // for a second wait in the test
	})
	return ch
}

func (ch *child) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-ch.end:
		ch.end <- err
		if err != nil {
			t.Fatalf("helper failed: %v\n%s", err, ch.out.String())
		}
	case <-time.After(helperWait):
		t.Fatalf("helper did not end within %v\n%s", helperWait, ch.out.String())
	}
}

// runStampede runs reps rounds of procs processes x per goroutines calling
// one cold key at once, and returns the origin calls of each round.
func runStampede(t *testing.T, addr string, c rueidis.Client, mode string, procs, per, reps int) []int64 {
	t.Helper()
	ctx := context.Background()
	children := make([]*child, procs)
	for i := range children {
		children[i] = startChild(t,
			helperModeEnv+"="+mode, helperAddrEnv+"="+addr,
			helperRepsEnv+"="+strconv.Itoa(reps), helperGEnv+"="+strconv.Itoa(per),
			helperIDEnv+"="+strconv.Itoa(i), helperLeaseMS+"=2000")
	}
	calls := make([]int64, reps)
	for rep := range reps {
		elems := make([]string, procs)
		for i := range elems {
			elems[i] = "go"
		}
		if err := c.Do(ctx, c.B().Rpush().Key(fmt.Sprintf("go:%d", rep)).Element(elems...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		for range procs {
			err := c.Do(ctx, c.B().Blpop().Key(fmt.Sprintf("done:%d", rep)).Timeout(helperWait.Seconds()).Build()).Error()
			if err != nil {
				for _, ch := range children {
					t.Logf("helper output: %s", ch.out.String())
				}
				t.Fatalf("rep %d: waiting for helpers: %v", rep, err)
			}
		}
		n, err := c.Do(ctx, c.B().Get().Key(fmt.Sprintf("calls:%d", rep)).Build()).AsInt64()
		if err != nil {
			t.Fatalf("rep %d: read calls: %v", rep, err)
		}
		calls[rep] = n
	}
	for _, ch := range children {
		ch.wait(t)
	}
	return calls
}

// TestStampedeProcesses is the acceptance stampede: 4 processes x 64
// goroutines on one cold key with a 50 ms origin call it once, in every one
// of 20 rounds; the same rounds without the herd call it about 256 times.
func TestStampedeProcesses(t *testing.T) {
	const procs, per, reps, baseReps = 4, 64, 20, 3
	srv, c := startRedis(t)
	calls := runStampede(t, srv.Addr(), c, modeStampede, procs, per, reps)
	for rep, n := range calls {
		if n != 1 {
			t.Errorf("round %d: origin calls = %d, want 1", rep, n)
		}
	}
	srv2, c2 := startRedis(t)
	base := runStampede(t, srv2.Addr(), c2, modeNoHerd, procs, per, baseReps)
	var sum int64
	for _, n := range base {
		sum += n
	}
	mean := float64(sum) / float64(len(base))
	if mean <= 1 {
		t.Errorf("without the herd: mean origin calls = %.1f, want a stampede (> 1)", mean)
	}
	t.Logf("origin calls per cold key, %d processes x %d goroutines: herd %v (%d rounds); no herd %v (mean %.1f)",
		procs, per, calls, reps, base, mean)
}

// TestHolderDeath: the holder process is SIGKILLed in its load; a waiter in
// another process (this one) takes over within lease + 1 s; 2 origin calls.
func TestHolderDeath(t *testing.T) {
	srv, c := startRedis(t)
	g, took, lease := holderDeath(t, srv.Addr(), c)
	if s := g.Stats(); s.LockSteals != 1 {
		t.Errorf("lock steals = %d, want 1", s.LockSteals)
	}
	t.Logf("take-over %v after SIGKILL (lease %v)", took, lease)
}

// holderDeath runs the holder-death scenario against the Redis at addr (c
// is a client for it): a child process takes the lease and hangs in its
// load; a Group here waits, the child is SIGKILLed, and the waiter must
// take over within lease + 1 s with 2 origin calls in all. It returns the
// waiting Group, how long the take-over took, and the lease.
func holderDeath(t *testing.T, addr string, c rueidis.Client) (*Group, time.Duration, time.Duration) {
	t.Helper()
	const lease = 500 * time.Millisecond
	ctx := context.Background()
	holder := startChild(t, helperModeEnv+"="+modeHolder, helperAddrEnv+"="+addr,
		helperLeaseMS+"="+strconv.Itoa(int(lease.Milliseconds())))
	if err := c.Do(ctx, c.B().Blpop().Key("holding").Timeout(helperWait.Seconds()).Build()).Error(); err != nil {
		t.Fatalf("waiting for the holder: %v\n%s", err, holder.out.String())
	}
	g := newGroup(t, &Options{Client: newClient(t, addr), LeaseTTL: lease, Logger: slog.New(slog.DiscardHandler)})
	sleeping := make(chan struct{}, 1)
	g.beforeWait = func(string) {
		select {
		case sleeping <- struct{}{}:
		default:
		}
	}
	res := make(chan error, 1)
	var done time.Time
	go func() {
		_, err := g.Do(ctx, "victim", nil, func(ctx context.Context) ([]byte, time.Duration, error) {
			c.Do(ctx, c.B().Incr().Key("calls:victim").Build())
			return []byte("v"), time.Minute, nil
		})
		done = time.Now()
		res <- err
	}()
	<-sleeping
	killed := time.Now()
	if err := holder.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	took := done.Sub(killed)
	if took > lease+time.Second {
		t.Errorf("take-over took %v after the kill, want <= lease + 1s = %v", took, lease+time.Second)
	}
	n, err := c.Do(ctx, c.B().Get().Key("calls:victim").Build()).AsInt64()
	if err != nil || n != 2 {
		t.Errorf("origin calls = %d (%v), want 2", n, err)
	}
	return g, took, lease
}
