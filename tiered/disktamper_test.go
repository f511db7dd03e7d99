package tiered

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
)

// TestSignedDiskRefusesInjectedEntries: on a signed route, an entry someone
// with access to Dir added while the cache was closed — an unsigned
// envelope, or plain bytes, as store.Set writes them — is never served,
// and each is counted. (Before, a brand-new unsigned key written with
// store's Set was served on a Memory|Disk route: the disk was never
// verified.)
func TestSignedDiskRefusesInjectedEntries(t *testing.T) {
	for _, tiers := range []Tier{Memory | Disk, Disk, Memory | Disk | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			ctx := context.Background()
			opts := &Options{Dir: t.TempDir(), Logger: quietLog, Signing: secRing(1, 1),
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			if tiers&Redis != 0 {
				opts.Redis = redisOpts(redistest.Start(t, nil))
			}
			c := openT(t, opts)
			if err := c.Set(ctx, "k:genuine", []byte("value"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().UnixNano()
			unsigned := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: 42}, Payload: []byte("EVIL-LOCAL")}
			if err := db.Set(ctx, "k:injected", unsigned.Append(nil), 0); err != nil {
				t.Fatal(err)
			}
			if err := db.Set(ctx, "k:raw", []byte("EVIL-RAW"), 0); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			c = openT(t, opts)
			for range 2 {
				for _, k := range []string{"k:injected", "k:raw"} {
					if v, ok, err := c.Get(ctx, k); err != nil || ok {
						t.Fatalf("Get(%s) = %q, %v, %v; want a miss: nobody holding the key wrote it", k, v, ok, err)
					}
				}
				if v, ok := mustGet(t, c, "k:genuine"); !ok || string(v) != "value" {
					t.Fatalf("Get(k:genuine) = %q, %v; the genuine entry must survive", v, ok)
				}
			}
			if n := c.Stats().DiskCorrupt; n < 2 {
				t.Errorf("DiskCorrupt = %d, want both injected entries counted", n)
			}
		})
	}
}

// writeAsOtherUser has uid 65534 create a file in dir (a shell, since the
// test binary's own directory is private), and returns its failure.
func writeAsOtherUser(t *testing.T, dir string) error {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `echo EVIL > "$1/000001.log"`, "sh", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestDirMustBeOwn: Open refuses a Dir that others may write, or that
// another user owns, with ErrConfig naming it — whoever can write there can
// replace the store's files — unless AllowSharedDir says so.
func TestDirMustBeOwn(t *testing.T) {
	ctx := context.Background()
	routes := []Route{{Prefix: "k:", Tiers: Memory | Disk}}
	// Let other users walk down to the Dirs, as they could to a cache
	// directory under /var/cache: then only each Dir's own mode decides.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, &Options{Dir: dir, Routes: routes, Logger: quietLog})
	if !errors.Is(err, ErrConfig) || !errors.Is(err, store.ErrInsecureDir) {
		t.Fatalf("Open on a 0777 Dir = %v; want ErrConfig wrapping store.ErrInsecureDir", err)
	}
	c, err := Open(ctx, &Options{Dir: dir, Routes: routes, Logger: quietLog, AllowSharedDir: true})
	if err != nil {
		t.Fatalf("Open on a 0777 Dir with AllowSharedDir: %v", err)
	}
	c.Close()

	if os.Geteuid() != 0 {
		t.Skip("a Dir owned by another user, and a process of another user, need root: skipped")
	}
	// Another user can put files in the 0777 Dir (what Open refused), and
	// cannot in a Dir the cache made itself (0700).
	if err := writeAsOtherUser(t, dir); err != nil {
		t.Fatalf("another user could not write into the 0777 Dir (%v): the test proves nothing", err)
	}
	own := filepath.Join(base, "own")
	openT(t, &Options{Dir: own, Routes: routes, Logger: quietLog})
	if err := writeAsOtherUser(t, own); err == nil {
		t.Fatal("another user wrote into the Dir the cache made")
	}
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Skipf("chown to another user: %v", err)
	}
	if _, err := Open(ctx, &Options{Dir: other, Routes: routes, Logger: quietLog}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Open on a Dir owned by uid 65534 = %v; want ErrConfig", err)
	}
}
