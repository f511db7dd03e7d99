package herd

import (
	"strconv"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/internal/keyslot"
	"github.com/thermoscache/thermos/internal/redistest"
)

func TestHasHashTag(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"plain", false}, {"u:{42}:x", true}, {"{}x", false}, {"a{b", false},
		{"a}b", false}, {"}{x}", true}, {"{{x}}", true}, {"x{}{y}", false},
	}
	for _, tt := range tests {
		if got := hasHashTag(tt.key); got != tt.want {
			t.Errorf("hasHashTag(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// weirdKeys covers each branch of slotSuffix.
var weirdKeys = []string{
	"plain", "u:{42}:name", "{}x", "a{b", "a}b", "}{x}", "{{x}}", "x{}{y}",
	"}", "{", "{}", "a}b{c", "héllo wörld", "trailing}",
}

func TestSlotSuffixSameSlotAndUnique(t *testing.T) {
	seen := map[string]string{}
	for _, key := range weirdKeys {
		s := slotSuffix(key)
		for _, name := range []string{DefaultLockPrefix + s, DefaultChannelPrefix + s} {
			if got, want := keySlot(name), keySlot(key); got != want {
				t.Errorf("slot of %q = %d, want %d (the slot of %q)", name, got, want, key)
			}
		}
		if other, dup := seen[s]; dup {
			t.Errorf("slotSuffix(%q) = slotSuffix(%q) = %q", key, other, s)
		}
		seen[s] = key
	}
}

func TestSameSlotTagCoversEverySlot(t *testing.T) {
	var covered [keyslot.Slots]bool
	left := keyslot.Slots
	for i := 0; i < 1<<20 && left > 0; i++ {
		s := keyslot.Of(strconv.Itoa(i))
		if !covered[s] {
			covered[s] = true
			left--
		}
	}
	if left != 0 {
		t.Fatalf("%d slots have no decimal tag below 2^20", left)
	}
}

// TestSlotSuffixAgreesWithRedis asks a real Redis in cluster mode.
func TestSlotSuffixAgreesWithRedis(t *testing.T) {
	srv := redistest.Start(t, &redistest.Options{Args: []string{"--cluster-enabled", "yes"}})
	slot := func(key string) string {
		v, err := srv.Do("CLUSTER", "KEYSLOT", key)
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
		}
		return strings.TrimSpace(v)
	}
	for _, key := range weirdKeys {
		want := slot(key)
		if got := strconv.Itoa(int(keySlot(key))); got != want {
			t.Errorf("keySlot(%q) = %s, redis says %s", key, got, want)
		}
		if got := slot(DefaultLockPrefix + slotSuffix(key)); got != want {
			t.Errorf("redis slot of lock key for %q = %s, want %s", key, got, want)
		}
	}
}

// TestKeysForNames: the lock and channel names keysFor builds in one
// allocation are the prefixes followed by slotSuffix, for each form.
func TestKeysForNames(t *testing.T) {
	g := newGroup(t, &Options{LockPrefix: "L:", ChannelPrefix: "C:"})
	for _, key := range []string{"user:{42}:name", "plain", "a}b", "{}x", ""} {
		k := g.keysFor(key)
		if want := "L:" + slotSuffix(key); k.lock != want {
			t.Errorf("keysFor(%q).lock = %q, want %q", key, k.lock, want)
		}
		if want := "C:" + slotSuffix(key); k.channel != want {
			t.Errorf("keysFor(%q).channel = %q, want %q", key, k.channel, want)
		}
		if k.data != key {
			t.Errorf("keysFor(%q).data = %q", key, k.data)
		}
	}
}
