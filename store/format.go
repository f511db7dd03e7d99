package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	// formatFile names the marker file that identifies a store directory.
	formatFile = "THERMOS-FORMAT"
	// formatMarker is the marker's content for this version of the store:
	// Pebble v2, keys as given, values as records (see entry.go). Version 1
	// stored internal/envelope encodings; a v1 directory is refused with
	// ErrIncompatible.
	formatMarker = "thermos-store-format v2\n"
	// lockName is Pebble's lock file, which may exist before the marker.
	lockName = "LOCK"
)

// checkFormat verifies dir's format marker, writing it into a directory that
// has none and holds nothing else (a new store). The directory must be locked.
func checkFormat(fs vfs.FS, dir string) error {
	path := fs.PathJoin(dir, formatFile)
	f, err := fs.Open(path)
	switch {
	case err == nil:
		defer f.Close()
		buf, err := io.ReadAll(io.LimitReader(f, 256))
		if err != nil {
			return fmt.Errorf("read format marker: %w", err)
		}
		if string(buf) != formatMarker {
			return fmt.Errorf("%w: marker %q, want %q", ErrIncompatible, truncate(string(buf), 64), strings.TrimSpace(formatMarker))
		}
		return nil
	case !oserror.IsNotExist(err):
		return fmt.Errorf("read format marker: %w", err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, n := range names {
		if n != lockName && n != formatFile+".tmp" {
			return fmt.Errorf("%w: %s is not empty and has no %s marker (found %q)", ErrIncompatible, dir, formatFile, n)
		}
	}
	return writeFormat(fs, dir)
}

// writeFormat writes the marker atomically: temp file, sync, rename, sync dir.
func writeFormat(fs vfs.FS, dir string) error {
	path := fs.PathJoin(dir, formatFile)
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("write format marker: %w", err)
	}
	_, err = io.WriteString(f, formatMarker)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(dir); err == nil {
			err = d.Sync()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		return fmt.Errorf("write format marker: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Wipe removes the store in dir, so that the next Open starts cold. It is
// WipeFS on the real disk.
func Wipe(dir string) error { return WipeFS(vfs.Default, dir) }

// WipeFS removes the store in dir on fs. A missing directory is not an
// error. It refuses, with ErrLocked, a store that is open (in this process
// or another), and, with ErrIncompatible, a non-empty directory that has no
// store format marker, so that a wrong path never deletes unrelated files.
func WipeFS(fs vfs.FS, dir string) error {
	if dir == "" {
		return fmt.Errorf("store: wipe: empty directory name")
	}
	names, err := fs.List(dir)
	if err != nil {
		if oserror.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("store: wipe %s: %w", dir, err)
	}
	if len(names) > 0 {
		if _, err := fs.Stat(fs.PathJoin(dir, formatFile)); err != nil {
			if oserror.IsNotExist(err) {
				return fmt.Errorf("store: wipe %s: %w: no %s marker", dir, ErrIncompatible, formatFile)
			}
			return fmt.Errorf("store: wipe %s: %w", dir, err)
		}
	}
	g := newGuardFS(fs, newFaultState(discardLogger()))
	l, err := g.Lock(fs.PathJoin(dir, lockName))
	if err != nil {
		return fmt.Errorf("store: wipe %s: %w", dir, err)
	}
	err = fs.RemoveAll(dir)
	_ = l.Close()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: wipe %s: %w", dir, err)
	}
	return nil
}
