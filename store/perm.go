package store

import (
	"fmt"
	"log/slog"
	"os"
)

// warnSharedDir logs a warning when dir already exists with permissions
// wider than owner-only (0700). The store creates its directory and files
// owner-only, but it does not tighten a directory it did not create: the
// operator chose it, and changing it could break their set-up. Cached values
// can be as sensitive as the data they come from, so the wider mode is worth
// a warning at every Open.
func warnSharedDir(dir string, log *slog.Logger) {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return // created owner-only by Open, or an error Open reports
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("store: directory is accessible to other users; cached values may be read or altered by them (chmod 700 it)",
			"dir", dir, "mode", fmt.Sprintf("%04o", perm))
	}
}
