package tiered

import "github.com/thermoscache/thermos/internal/envelope"

// Keyring holds the HMAC-SHA256 secrets for Options.Signing, by key id
// (one byte, stored in every signed value). New values are signed with
// Current; values signed with any id in Secrets verify, so a key is rotated
// without a flush: add the new secret, make it Current, and drop the old one
// once every value signed with it has been rewritten or has expired. A
// Keyring must not be modified while a Cache uses it. Its String, GoString
// and slog LogValue never show the secrets.
//
// It is the envelope package's type, named here so that programs outside
// this module can build one.
type Keyring = envelope.Keyring
