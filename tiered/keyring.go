package tiered

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/thermoscache/thermos/internal/envelope"
)

// Keyring holds the HMAC-SHA256 secrets for Options.Signing, by key id
// (one byte, stored in every signed value). New values are signed with
// Current; values signed with any id in Secrets verify, so a key is rotated
// without a flush: open the caches with a ring that adds the new secret and
// makes it Current, and drop the old one once every value signed with it
// has been rewritten or has expired. Open copies the ring: changing it
// afterwards does not affect an open Cache. Its String, GoString and slog
// LogValue never show the secrets.
type Keyring struct {
	Current byte
	Secrets map[byte][]byte
}

// String describes the ring without its secrets: the current key id and the
// ids it holds.
func (r Keyring) String() string {
	return fmt.Sprintf("tiered.Keyring{Current: %d, ids: %v, secrets: redacted}", r.Current, r.ids())
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

// clone copies r and its secrets, so that the caller's ring can change
// without affecting an open cache.
func (r *Keyring) clone() *Keyring {
	if r == nil {
		return nil
	}
	secrets := maps.Clone(r.Secrets)
	for id, s := range secrets {
		secrets[id] = slices.Clone(s)
	}
	return &Keyring{Current: r.Current, Secrets: secrets}
}

// envelopeRing is r as the envelope codec takes it, sharing its secrets.
func (r *Keyring) envelopeRing() *envelope.Keyring {
	if r == nil {
		return nil
	}
	return &envelope.Keyring{Current: r.Current, Secrets: r.Secrets}
}
