package tracking

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

func TestCoverPrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"one", []string{"a:"}, []string{"a:"}},
		{"duplicates", []string{"a:", "a:"}, []string{"a:"}},
		{"nested", []string{"user:1:", "user:"}, []string{"user:"}},
		{"siblings", []string{"b:", "a:"}, []string{"a:", "b:"}},
		{"chain", []string{"a", "ab", "abc", "b"}, []string{"a", "b"}},
		{"between", []string{"a", "a:", "aa", "b"}, []string{"a", "b"}},
		{"not a prefix", []string{"ab", "ac"}, []string{"ab", "ac"}},
		{"empty covers all", []string{"x:", "", "y:"}, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CoverPrefixes(tt.in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("CoverPrefixes(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestTrackingArgs(t *testing.T) {
	tests := []struct {
		name   string
		cover  []string
		noLoop bool
		want   []string
	}{
		{"all keys", nil, false, []string{"BCAST"}},
		{"empty prefix", []string{""}, true, []string{"BCAST", "NOLOOP"}},
		{"prefixes", []string{"a:", "b:"}, false, []string{"BCAST", "PREFIX", "a:", "PREFIX", "b:"}},
	}
	for _, tt := range tests {
		if got := trackingArgs(tt.cover, tt.noLoop); !slices.Equal(got, tt.want) {
			t.Errorf("%s: trackingArgs(%q, %v) = %q, want %q", tt.name, tt.cover, tt.noLoop, got, tt.want)
		}
	}
}

func TestTracked(t *testing.T) {
	tests := []struct {
		cover []string
		key   string
		want  bool
	}{
		{nil, "anything", true},
		{[]string{"a:"}, "a:1", true},
		{[]string{"a:"}, "b:1", false},
		{[]string{"a:", "b:"}, "b:1", true},
		{[]string{""}, "x", true},
	}
	for _, tt := range tests {
		if got := tracked(tt.cover, tt.key); got != tt.want {
			t.Errorf("tracked(%q, %q) = %v, want %v", tt.cover, tt.key, got, tt.want)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{
		{"7.0.5", true},
		{"7.0.15", true},
		{"7.2.4", true},
		{"8.0.0", true},
		{"7.0.4", false},
		{"7.0", false},
		{"6.2.14", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := versionAtLeast(tt.v, MinRedisVersion); got != tt.want {
			t.Errorf("versionAtLeast(%q, %q) = %v, want %v", tt.v, MinRedisVersion, got, tt.want)
		}
	}
}

func TestInfoField(t *testing.T) {
	info := "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n"
	got, ok := infoField(info, "redis_version")
	if !ok || got != "7.0.15" {
		t.Errorf("infoField(redis_version) = %q, %v, want 7.0.15, true", got, ok)
	}
	if _, ok := infoField(info, "nope"); ok {
		t.Errorf("infoField(nope) found a value")
	}
}

func TestOptionsDefaults(t *testing.T) {
	cfg, err := (*Options)(nil).config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBytes != DefaultMaxBytes || cfg.MaxTTL != DefaultMaxTTL || cfg.Policy != PolicyS3FIFO || cfg.HitYield != DefaultHitYield {
		t.Errorf("defaults = %d %v %v %d", cfg.MaxBytes, cfg.MaxTTL, cfg.Policy, cfg.HitYield)
	}
	for _, tt := range []struct {
		hitYield int
		yield    bool
		mask     uint64
	}{{0, true, DefaultHitYield - 1}, {-1, false, 0}, {1000, true, 1023}, {1, true, 0}} {
		c := newLocal(t, &Options{HitYield: tt.hitYield})
		if c.yield != tt.yield || c.yieldMask != tt.mask {
			t.Errorf("HitYield %d: yield %v every %#x+1 hits, want %v every %#x+1", tt.hitYield, c.yield, c.yieldMask, tt.yield, tt.mask)
		}
	}
	if cfg.shards&(cfg.shards-1) != 0 || cfg.shareBytes < DefaultMinShardBytes && cfg.shards > 1 {
		t.Errorf("default shards = %d with share %d", cfg.shards, cfg.shareBytes)
	}

	opts := &Options{Prefixes: []string{"b:", "a:"}, Redis: &rueidis.ClientOption{ConnWriteTimeout: 3 * time.Second}, Shards: 5}
	cfg, err = opts.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.shards != 8 {
		t.Errorf("Shards 5 gave %d shards, want 8", cfg.shards)
	}
	if cfg.ConnWriteTimeout != 3*time.Second || cfg.keepAlive != time.Second {
		t.Errorf("ConnWriteTimeout %v keepAlive %v, want 3s 1s", cfg.ConnWriteTimeout, cfg.keepAlive)
	}
	if opts.Prefixes[0] != "b:" || opts.Redis.ConnWriteTimeout != 3*time.Second {
		t.Errorf("config wrote to the caller's Options")
	}
	cfg, _ = (&Options{Redis: &rueidis.ClientOption{}, ConnWriteTimeout: 200 * time.Millisecond}).config()
	if cfg.keepAlive != 200*time.Millisecond {
		t.Errorf("keepAlive = %v, want min(1s, ConnWriteTimeout)", cfg.keepAlive)
	}
}

func TestOptionsInvalid(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"negative bytes", Options{MaxBytes: -1}, ErrInvalidOptions},
		{"negative ttl", Options{MaxTTL: -time.Second}, ErrInvalidOptions},
		{"too many shards", Options{Shards: MaxShards + 1}, ErrInvalidOptions},
		{"negative shards", Options{Shards: -1}, ErrInvalidOptions},
		{"share too small", Options{MaxBytes: 1024, Shards: 16}, ErrInvalidOptions},
		{"negative timeout", Options{ConnWriteTimeout: -1}, ErrInvalidOptions},
		{"arc", Options{Policy: PolicyARC}, ErrUnsupportedPolicy},
		{"unknown policy", Options{Policy: 42}, ErrUnsupportedPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(t.Context(), &tt.opts)
			if !errors.Is(err, tt.want) {
				t.Errorf("New(%+v) error = %v, want %v", tt.opts, err, tt.want)
			}
		})
	}
}
