package tiered

import (
	"slices"
	"testing"
)

func TestRouterFind(t *testing.T) {
	r := newRouter([]Route{
		{Prefix: "user:", Tiers: Memory},
		{Prefix: "user:session:", Tiers: Redis},
		{Prefix: "", Tiers: Disk},
		{Prefix: "u", Tiers: Memory | Redis},
	})
	tests := []struct {
		name, key, want string
	}{
		{"longest wins", "user:session:42", "user:session:"},
		{"middle", "user:42", "user:"},
		{"short", "ufo", "u"},
		{"default", "zebra", ""},
		{"empty key goes to default", "", ""},
		{"prefix itself", "user:", "user:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.find(tt.key).Prefix; got != tt.want {
				t.Errorf("find(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestTrackedPrefixes(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   []string
	}{
		{"none", []Route{{Prefix: "a", Tiers: Memory}, {Prefix: "b", Tiers: Redis}}, nil},
		{"memory+redis and disk+redis", []Route{
			{Prefix: "b:", Tiers: Disk | Redis},
			{Prefix: "a:", Tiers: Memory | Redis},
			{Prefix: "c:", Tiers: Redis},
		}, []string{"a:", "b:"}},
		{"nested collapse", []Route{
			{Prefix: "user:", Tiers: Memory | Redis},
			{Prefix: "user:session:", Tiers: Memory | Disk | Redis},
			{Prefix: "users", Tiers: Memory | Redis},
		}, []string{"user:", "users"}},
		{"default covers all", []Route{
			{Prefix: "", Tiers: Memory | Redis},
			{Prefix: "x", Tiers: Memory | Redis},
		}, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trackedPrefixes(tt.routes); !slices.Equal(got, tt.want) {
				t.Errorf("trackedPrefixes = %q, want %q", got, tt.want)
			}
		})
	}
}
