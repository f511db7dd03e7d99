package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/store"
)

// Open refuses an existing directory other users may write to unless
// AllowSharedDir is set, warns about one they may only read or enter, and is
// silent about one it creates or one that is owner-only. It never changes
// the mode of a directory it did not create.
func TestSharedDir(t *testing.T) {
	tests := []struct {
		name   string
		mode   os.FileMode // of an existing directory; 0: Open creates it
		allow  bool        // Options.AllowSharedDir
		refuse bool
		warn   bool
	}{
		{"created by Open", 0, false, false, false},
		{"existing 0700", 0o700, false, false, false},
		{"existing 0750", 0o750, false, false, true},
		{"existing 0755", 0o755, false, false, true},
		{"existing 0770", 0o770, false, true, false},
		{"existing 0703", 0o703, false, true, false},
		{"existing 0777", 0o777, false, true, false},
		{"existing 0777 allowed", 0o777, true, false, true},
		{"existing 0700 allowed", 0o700, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			if tt.mode != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil { // not subject to umask
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			db, err := store.Open(dir, &store.Options{
				AllowSharedDir: tt.allow,
				Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if tt.refuse {
				if !errors.Is(err, store.ErrInsecureDir) {
					t.Fatalf("Open = %v, want ErrInsecureDir", err)
				}
				for _, want := range []string{dir, fmt.Sprintf("mode %04o", tt.mode), "owner uid"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
				if names, _ := os.ReadDir(dir); len(names) != 0 {
					t.Errorf("refused Open created %d files in %s", len(names), dir)
				}
			} else {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			}
			warned := strings.Contains(logs.String(), "level=WARN")
			if warned != tt.warn {
				t.Errorf("warned = %v, want %v; logs:\n%s", warned, tt.warn, logs.String())
			}
			if warned && !strings.Contains(logs.String(), dir) {
				t.Errorf("warning does not name the directory %s: %s", dir, logs.String())
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.mode
			if want == 0 {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("dir mode after Open = %04o, want %04o (the store does not change an existing dir)", fi.Mode().Perm(), want)
			}
		})
	}
}
