package herd

import (
	"strconv"
	"strings"
)

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

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
	if hasHashTag(key) {
		return "t:" + key
	}
	if !strings.Contains(key, "}") {
		return "k:{" + key + "}"
	}
	return "s:{" + sameSlotTag(keySlot(key)) + "}" + key
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
func keySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % clusterSlots
}

// sameSlotTag returns the smallest decimal number whose slot is slot. Every
// slot is reached below 2^20 (see TestSameSlotTagCoversEverySlot).
func sameSlotTag(slot uint16) string {
	for i := 0; ; i++ {
		s := strconv.Itoa(i)
		if crc16(s)%clusterSlots == slot {
			return s
		}
	}
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// Redis Cluster uses for key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
