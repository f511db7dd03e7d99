package tiered

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// On Redis Cluster the documented grants plus +cluster|slots +role run
// the cache as on one server, the probes reaching every node; without
// +role (InvalidatePrefix asks each node) Open is refused naming it.
func TestACLCluster(t *testing.T) {
	o := (&Options{Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis}}}).withDefaults()
	rules := append(aclRules(&o, true), "+cluster|slots", "+role")
	users := [][]string{
		append([]string{"--user", "thermos", "on", ">" + aclPassword}, rules...),
		append([]string{"--user", "norole", "on", ">" + aclPassword},
			slices.DeleteFunc(slices.Clone(rules), func(r string) bool { return r == "+role" })...),
	}
	var args []string
	for _, u := range users {
		args = append(args, u...)
	}
	cl := redistest.StartCluster(t, &redistest.ClusterOptions{Args: args})
	open := func(user string) (*Cache, error) {
		var logs syncBuffer
		return Open(t.Context(), &Options{
			Redis:  &rueidis.ClientOption{InitAddress: cl.Addrs(), Username: user, Password: aclPassword},
			Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis}},
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}
	c, err := open("thermos")
	if err != nil {
		t.Fatalf("Open with the documented cluster grants: %v", err)
	}
	defer c.Close()
	ctx := t.Context()
	for _, k := range []string{"app:a", "app:b", "app:c", "app:d"} {
		if err := c.Set(ctx, k, []byte(k), 0); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
	}
	if v, ok, err := c.GetOrLoad(ctx, "app:load", LoaderFunc(func(_ context.Context, _ string) ([]byte, error) { return []byte("l"), nil })); err != nil || !ok || string(v) != "l" {
		t.Fatalf("GetOrLoad = %q, %v, %v", v, ok, err)
	}
	if n, err := c.InvalidatePrefix(ctx, "app:"); err != nil || n != 5 {
		t.Fatalf("InvalidatePrefix = %d, %v; want 5", n, err)
	}

	_, err = open("norole")
	var re *RightsError
	if !errors.As(err, &re) || !slices.Contains(re.Missing, "+role") || !strings.Contains(err.Error(), "ROLE") {
		t.Fatalf("Open without +role on a cluster = %v, want a RightsError naming +role", err)
	}
}
