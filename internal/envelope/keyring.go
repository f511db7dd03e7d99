package envelope

import (
	"fmt"
	"log/slog"
	"slices"
)

// String describes the ring without its secrets: the current key id and the
// ids it holds. Secrets never appear in formatted output or logs.
func (r Keyring) String() string {
	return fmt.Sprintf("envelope.Keyring{Current: %d, ids: %v, secrets: redacted}", r.Current, r.ids())
}

// GoString is String, so that %#v does not print the secrets either.
func (r Keyring) GoString() string { return r.String() }

// LogValue makes slog print the ring without its secrets.
func (r Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("current", int(r.Current)), slog.Any("ids", r.ids()))
}

func (r Keyring) ids() []int {
	ids := make([]int, 0, len(r.Secrets))
	for id := range r.Secrets {
		ids = append(ids, int(id))
	}
	slices.Sort(ids)
	return ids
}
