package tracking

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// A wrong password is a refusal, not unavailability: New fails at once even
// with ConnectInBackground, and the error does not carry the password.
func TestWrongPasswordRefused(t *testing.T) {
	s := redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "right-secret"}})
	_, err := New(context.Background(), &Options{
		Redis:               &rueidis.ClientOption{InitAddress: []string{s.Addr()}, Password: "wrong-secret"},
		ConnectInBackground: true,
	})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("New with a wrong password = %v, want ErrRefused", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), "right-secret") {
		t.Fatalf("error text leaks a password: %v", err)
	}
}
