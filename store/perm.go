package store

import (
	"fmt"
	"log/slog"
	"os"
)

// checkDir vets an existing store directory before Open uses it. The store
// creates its directory and files owner-only, but it does not change a
// directory it did not create: the operator chose it. Whoever can write to
// the directory can swap the store's files for their own, so a directory
// writable by group or others, or owned by another user, is refused with
// ErrInsecureDir unless allowShared; one that others can only read or enter
// is accepted with a warning at every Open, since cached values can be as
// sensitive as the data they come from. A missing directory is fine (Open
// creates it 0700); other Stat errors are left for Open to report.
func checkDir(dir string, allowShared bool, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return nil
	}
	perm := fi.Mode().Perm()
	uid, known := ownerOf(fi)
	me := os.Geteuid()
	foreign := known && me >= 0 && uid != me
	if perm&0o022 != 0 || foreign {
		if !allowShared {
			return fmt.Errorf("%w: mode %04o, owner uid %s, this process uid %d: another user could replace its files; chmod 700 (and chown) it, or set Options.AllowSharedDir",
				ErrInsecureDir, perm, ownerText(uid, known), me)
		}
		log.Warn("store: using a directory other users may write to, as Options.AllowSharedDir allows",
			"dir", dir, "mode", fmt.Sprintf("%04o", perm), "owner_uid", ownerText(uid, known))
		return nil
	}
	if perm&0o077 != 0 {
		log.Warn("store: directory is accessible to other users; cached values may be read by them (chmod 700 it)",
			"dir", dir, "mode", fmt.Sprintf("%04o", perm))
	}
	return nil
}

func ownerText(uid int, known bool) string {
	if !known {
		return "unknown"
	}
	return fmt.Sprint(uid)
}
