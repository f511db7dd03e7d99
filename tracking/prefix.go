package tracking

import (
	"slices"
	"strings"
)

// CoverPrefixes returns the minimal set of non-overlapping prefixes that
// covers every key matched by prefixes: duplicates are removed and a prefix
// that starts with another one is dropped (the shorter one already covers
// it). Redis refuses overlapping prefixes on one CLIENT TRACKING BCAST
// connection; this is what New registers. The result is sorted. An empty
// prefix covers every key, so if present it is the only one returned; an
// empty input returns nil (meaning every key, too).
func CoverPrefixes(prefixes []string) []string {
	if len(prefixes) == 0 {
		return nil
	}
	sorted := slices.Clone(prefixes)
	slices.Sort(sorted)
	out := sorted[:0]
	for _, p := range sorted {
		// Sorted order puts a prefix before every string that starts with
		// it, and such strings are never kept, so comparing with the last
		// kept prefix is enough.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return slices.Clip(out)
}

// trackingArgs returns the CLIENT TRACKING ON arguments for a cover.
func trackingArgs(cover []string, noLoop bool) []string {
	args := []string{"BCAST"}
	for _, p := range cover {
		if p == "" { // every key: BCAST without PREFIX
			args = args[:1]
			break
		}
		args = append(args, "PREFIX", p)
	}
	if noLoop {
		args = append(args, "NOLOOP")
	}
	return args
}

// tracked reports whether key falls under a tracked prefix of cover; an
// empty cover tracks every key.
func tracked(cover []string, key string) bool {
	if len(cover) == 0 {
		return true
	}
	for _, p := range cover {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
