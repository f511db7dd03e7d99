package tiered_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/thermoscache/thermos/tiered"
)

// A program outside the module can build a keyring and sign with it.
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
	for _, s := range []string{fmt.Sprint(ring), fmt.Sprintf("%+v", *ring), fmt.Sprintf("%#v", ring), fmt.Sprintf("%v", tiered.Options{Signing: ring})} {
		if containsSecret(s, secret) {
			t.Errorf("formatted keyring shows a secret: %s", s)
		}
	}
}

func containsSecret(s, secret string) bool {
	return strings.Contains(s, secret) || strings.Contains(s, fmt.Sprint([]byte(secret))) ||
		strings.Contains(s, fmt.Sprintf("%x", secret))
}
