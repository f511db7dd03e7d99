package tiered_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/tiered"
)

// A program outside the module can build a keyring and sign with it; no
// formatting of it, or of Options holding it, shows a secret.
func TestKeyringFromOutside(t *testing.T) {
	secret := "outside-secret-0123456789abcdef"
	ring := &tiered.Keyring{Current: 2, Secrets: map[byte][]byte{1: []byte("old-" + secret), 2: []byte(secret)}}
	c, err := tiered.Open(t.Context(), &tiered.Options{Signing: ring})
	if err != nil {
		t.Fatalf("Open with a keyring: %v", err)
	}
	defer c.Close()
	if err := c.Set(t.Context(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Get(t.Context(), "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("ring", "ring", ring, "value", *ring)
	for _, s := range []string{fmt.Sprint(ring), fmt.Sprintf("%+v", *ring), fmt.Sprintf("%#v", ring), fmt.Sprintf("%v", tiered.Options{Signing: ring}), logs.String()} {
		if containsSecret(s, secret) {
			t.Errorf("formatted keyring shows a secret: %s", s)
		}
		if !strings.Contains(s, "2") && !strings.Contains(s, "0x") {
			t.Errorf("formatted keyring does not show its current id: %s", s)
		}
	}
}

// Open copies the ring: emptying the caller's ring afterwards does not
// unsign the cache's writes or make its values unreadable.
func TestKeyringCopiedAtOpen(t *testing.T) {
	ring := &tiered.Keyring{Current: 1, Secrets: map[byte][]byte{1: []byte("copied-secret-0123456789abcdef")}}
	c, err := tiered.Open(t.Context(), &tiered.Options{Signing: ring})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ring.Secrets[1][0] ^= 0xff
	delete(ring.Secrets, 1)
	ring.Current = 9
	if err := c.Set(t.Context(), "k", []byte("v"), 0); err != nil {
		t.Fatalf("Set after the caller changed its ring: %v", err)
	}
	if v, ok, err := c.Get(t.Context(), "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get after the caller changed its ring = %q, %v, %v; want v", v, ok, err)
	}
}

func containsSecret(s, secret string) bool {
	return strings.Contains(s, secret) || strings.Contains(s, fmt.Sprint([]byte(secret))) ||
		strings.Contains(s, fmt.Sprintf("%x", secret))
}
