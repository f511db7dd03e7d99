package herd

import (
	"strconv"
	"strings"

	"github.com/thermoscache/thermos/internal/keyslot"
)

// slotSuffix returns a string that, appended to a prefix without braces,
// names a key in the same Redis Cluster hash slot as key. Different keys give
// different suffixes. The three forms cannot collide: they start with
// different markers.
//
//   - key has a hash tag ("user:{42}:name"): "t:" + key; the combined name's
//     first '{' is the key's, so its tag is the same.
//   - key has no '}' at all: "k:{" + key + "}"; the whole key becomes the tag.
//   - otherwise (a '}' but no valid tag, such as "a}b" or "{}x"): the key's
//     whole-key slot cannot be spelled as a tag containing the key, so
//     "s:{" + n + "}" + key, where n is the smallest decimal number whose
//     slot is the key's. Finding n costs about 16k CRC16s (~0.3 ms).
func slotSuffix(key string) string {
	pre, post := slotSuffixParts(key)
	return pre + key + post
}

// slotSuffixParts returns slotSuffix(key) as the strings before and after
// key, so a caller can build names without the suffix's own allocation.
func slotSuffixParts(key string) (pre, post string) {
	if hasHashTag(key) {
		return "t:", ""
	}
	if !strings.Contains(key, "}") {
		return "k:{", "}"
	}
	return "s:{" + sameSlotTag(keySlot(key)) + "}", ""
}

// hasHashTag reports whether Redis Cluster would hash only part of key: a
// '{', then a '}' later with at least one byte between them.
func hasHashTag(key string) bool {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return false
	}
	return strings.IndexByte(key[i+1:], '}') > 0
}

// keySlot returns key's Redis Cluster hash slot.
func keySlot(key string) uint16 { return keyslot.Of(key) }

// sameSlotTag returns the smallest decimal number whose slot is slot. Every
// slot is reached below 2^20 (see TestSameSlotTagCoversEverySlot).
func sameSlotTag(slot uint16) string {
	for i := 0; ; i++ {
		s := strconv.Itoa(i)
		if keyslot.Of(s) == slot {
			return s
		}
	}
}
