//go:build unix

package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thermoscache/thermos/store"
)

// nobody is the uid an existing directory is given to play "another user".
const nobody = 65534

// TestForeignOwnerRefused: a directory owned by another user is refused even
// when its mode is 0700, since its owner can change that mode and swap the
// files at any time; AllowSharedDir accepts it.
func TestForeignOwnerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skipf("needs root to give a directory to another user (running as uid %d)", os.Geteuid())
	}
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(dir, &store.Options{Logger: quietLogger(t)})
	if !errors.Is(err, store.ErrInsecureDir) {
		t.Fatalf("Open of a dir owned by uid %d = %v, want ErrInsecureDir", nobody, err)
	}
	for _, want := range []string{dir, "mode 0700", fmt.Sprintf("owner uid %d", nobody)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	db, err := store.Open(dir, &store.Options{AllowSharedDir: true, Logger: quietLogger(t)})
	if err != nil {
		t.Fatalf("Open with AllowSharedDir = %v", err)
	}
	if err := db.Set(context.Background(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPrivateUnderUmask000: the directory (and any parent Open creates) is
// 0700 and every file 0600 even when the process umask lets everything
// through.
func TestPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "parent", "db")
	db, err := store.Open(dir, &store.Options{Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := db.Set(ctx, fmt.Sprint(i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FlushForTest(); err != nil { // an sstable too
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s mode = %04o, want 0700", d, perm)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sst := 0
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s mode = %04o, want owner-only", e.Name(), perm)
		}
		if strings.HasSuffix(e.Name(), ".sst") {
			sst++
		}
	}
	if sst == 0 {
		t.Fatalf("no sstable among %d files: the check saw too little", len(ents))
	}
}
