package tracking

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// aclUsers are the users of the ACL tests. Their rights differ in how the
// check can run: "admin" may run ACL DRYRUN, "noadmin" may run ACL WHOAMI
// but not DRYRUN (-@admin), "noacl" may run no ACL command at all, so the
// last two are checked by the direct GET probe.
var aclUsers = []struct {
	name  string
	extra []string
}{
	{"admin", []string{"+@all"}},
	{"noadmin", []string{"+@all", "-@admin"}},
	{"noacl", []string{"+@all", "-acl"}},
}

const aclPassword = "acl-test-secret"

func newACLCache(t *testing.T, srv *redistest.Server, user string, prefixes []string, background bool) (*Cache, error) {
	t.Helper()
	c, err := New(t.Context(), &Options{
		Redis:               &rueidis.ClientOption{InitAddress: []string{srv.Addr()}, Username: user, Password: aclPassword},
		Prefixes:            prefixes,
		ConnectInBackground: background,
	})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestACLAllowsReadablePrefixes(t *testing.T) {
	srv := redistest.Start(t, nil)
	for _, u := range aclUsers {
		srv.SetUser(u.name, append([]string{"on", ">" + aclPassword, "~app:*", "~pub:*"}, u.extra...)...)
		c, err := newACLCache(t, srv, u.name, []string{"app:", "pub:x:"}, false)
		if err != nil {
			t.Errorf("user %s with ~app:* ~pub:*, tracking app: and pub:x:: New = %v, want success", u.name, err)
			continue
		}
		c.Close()
	}
}

func TestACLRefusesUnreadablePrefix(t *testing.T) {
	srv := redistest.Start(t, nil)
	tests := []struct {
		name       string
		keys       []string // key permissions of the user
		prefixes   []string
		wantPrefix string // named in the error
	}{
		{"another prefix", []string{"~app:*"}, []string{"app:", "other:"}, `"other:"`},
		{"narrower pattern", []string{"~app:users:*"}, []string{"app:"}, `"app:"`},
		{"write only", []string{"%W~app:*", "%R~pub:*"}, []string{"app:", "pub:"}, `"app:"`},
		{"pattern skipping some keys", []string{"~app:p*"}, []string{"app:"}, `"app:"`},
		{"no prefix means every key", []string{"~app:*"}, nil, "every key"},
	}
	for _, tt := range tests {
		for _, u := range aclUsers {
			t.Run(tt.name+"/"+u.name, func(t *testing.T) {
				name := u.name + "-" + strings.ReplaceAll(tt.name, " ", "-")
				srv.SetUser(name, append(append([]string{"on", ">" + aclPassword}, tt.keys...), u.extra...)...)
				for _, background := range []bool{false, true} {
					_, err := newACLCache(t, srv, name, tt.prefixes, background)
					if !errors.Is(err, ErrACL) {
						t.Fatalf("New (background %v) = %v, want ErrACL", background, err)
					}
					if !strings.Contains(err.Error(), tt.wantPrefix) {
						t.Errorf("error %q does not name %s", err, tt.wantPrefix)
					}
					if strings.Contains(err.Error(), aclPassword) {
						t.Errorf("error text leaks the password: %q", err)
					}
				}
			})
		}
	}
}

// A user that may not even run GET cannot work: refused too, by the probe.
func TestACLRefusesUserWithoutGet(t *testing.T) {
	srv := redistest.Start(t, nil)
	srv.SetUser("noget", "on", ">"+aclPassword, "~app:*", "+@all", "-get", "-acl")
	_, err := newACLCache(t, srv, "noget", []string{"app:"}, false)
	if !errors.Is(err, ErrACL) || !strings.Contains(err.Error(), `"app:"`) {
		t.Fatalf("New for a user without GET = %v, want ErrACL naming \"app:\"", err)
	}
}

func TestACLKeys(t *testing.T) {
	for _, p := range []string{"", "app:"} {
		keys := aclKeys(p)
		if len(keys) < len(aclProbeSuffixes) {
			t.Errorf("aclKeys(%q) = %q, want at least %d keys", p, keys, len(aclProbeSuffixes))
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, p) || k == "" {
				t.Errorf("aclKeys(%q) has %q, not a non-empty key under the prefix", p, k)
			}
		}
	}
}
