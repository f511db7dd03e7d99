package store_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/store"
)

// Open warns about an existing directory other users may read or enter,
// and is silent about one it creates or one that is owner-only.
func TestWarnsAboutSharedDir(t *testing.T) {
	tests := []struct {
		name string
		mode os.FileMode // of an existing directory; 0: Open creates it
		warn bool
	}{
		{"created by Open", 0, false},
		{"existing 0700", 0o700, false},
		{"existing 0750", 0o750, true},
		{"existing 0755", 0o755, true},
		{"existing 0777", 0o777, true},
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
			db, err := store.Open(dir, &store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(logs.String(), "accessible to other users")
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
