package envelope

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyringFormatHidesSecrets(t *testing.T) {
	secret := []byte("keyring-format-secret")
	r := Keyring{Current: 3, Secrets: map[byte][]byte{3: secret, 1: []byte("older-secret")}}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("ring", "ring", r, "ptr", &r)
	for _, s := range []string{fmt.Sprint(r), fmt.Sprint(&r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", &r),
		fmt.Sprintf("%v", struct{ R Keyring }{r}), logs.String()} {
		for _, leak := range []string{string(secret), fmt.Sprint(secret), fmt.Sprintf("%x", secret)} {
			if strings.Contains(s, leak) {
				t.Errorf("%q shows a secret", s)
			}
		}
		if !strings.Contains(s, "3") {
			t.Errorf("%q does not show the current key id", s)
		}
	}
}
