// Package keyslot computes Redis Cluster hash slots, so that batches and
// scripts can be grouped to touch keys of one slot only.
package keyslot

import "strings"

// Slots is the number of hash slots in a Redis Cluster.
const Slots = 16384

// Of returns key's hash slot: CRC16 (XMODEM) of the key, or of its hash tag
// (the part between the first '{' and the next '}', when not empty), mod
// 16384.
func Of(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % Slots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), as Redis Cluster uses.
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
