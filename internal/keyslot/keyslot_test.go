package keyslot

import "testing"

// Expected slots are the ones CLUSTER KEYSLOT returns (Redis docs and
// redis-cli): 12182 for "foo", 5061 for "bar", tags shared.
func TestOf(t *testing.T) {
	tests := []struct {
		key  string
		want uint16
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"{user1000}.following", Of("user1000")},
		{"123456789", 0x31C3 % Slots}, // CRC16/XMODEM check value
	}
	for _, tt := range tests {
		if got := Of(tt.key); got != tt.want {
			t.Errorf("Of(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
	if Of("foo{}{bar}") == Of("bar") {
		t.Errorf("an empty first tag must hash the whole key")
	}
}
