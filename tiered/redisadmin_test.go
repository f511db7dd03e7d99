package tiered

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// This file holds what the acceptance tests use to act on Redis from the
// outside, as another program would: a plain client, ACL users to keep one
// cache out while others write, CLIENT KILL, and INFO counters.

// quietLog discards the cache's warnings (undecodable values and the like,
// which the tests provoke on purpose).
var quietLog = slog.New(slog.DiscardHandler)

// admin is a plain rueidis client (no tracking) on s, for writes "by another
// program" and for server-side counters.
type admin struct {
	t testing.TB
	s *redistest.Server
	c rueidis.Client
}

func newAdmin(t testing.TB, s *redistest.Server) *admin {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(c.Close)
	return &admin{t: t, s: s, c: c}
}

// do runs one command, retrying for a while when the server is restarting.
func (a *admin) do(args ...string) rueidis.RedisResult {
	a.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res := a.c.Do(ctx, a.c.B().Arbitrary(args[0]).Args(args[1:]...).Build())
		cancel()
		err := res.Error()
		if _, isRedis := rueidis.IsRedisErr(err); err == nil || isRedis || rueidis.IsRedisNil(err) || time.Now().After(deadline) {
			return res
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *admin) mustDo(args ...string) rueidis.RedisMessage {
	a.t.Helper()
	res := a.do(args...)
	if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
		a.t.Fatalf("redis %v: %v", args, err)
	}
	m, _ := res.ToMessage()
	return m
}

// userOpts returns client options for the ACL user name (see addUser).
func userOpts(s *redistest.Server, name string) *rueidis.ClientOption {
	return &rueidis.ClientOption{
		InitAddress: []string{s.Addr()},
		Username:    name,
		Password:    "pw-" + name,
		ClientName:  name,
	}
}

// addUser creates (or re-enables) ACL user name with every right. A user
// does not survive a server restart (there is no ACL file), which keeps its
// clients out until the test calls addUser again.
func (a *admin) addUser(name string) {
	a.t.Helper()
	a.mustDo("ACL", "SETUSER", name, "on", "resetpass", ">pw-"+name, "~*", "&*", "+@all")
}

// cutUser keeps the clients of user name out of Redis until addUser: in one
// transaction it disables the user and kills, by ID, every connection of
// the user that has client tracking on (as an operator's CLIENT KILL ID
// would), so no reconnect can slip in between. It returns how many
// connections it killed.
func (a *admin) cutUser(name string) int {
	a.t.Helper()
	ids := a.trackingIDs(name)
	ctx := context.Background()
	killed := 0
	err := a.c.Dedicated(func(d rueidis.DedicatedClient) error {
		cmds := rueidis.Commands{d.B().Multi().Build(), d.B().AclSetuser().Username(name).Rule("off").Build()}
		for _, id := range ids {
			cmds = append(cmds, d.B().ClientKill().Id(id).Build())
		}
		cmds = append(cmds, d.B().Exec().Build())
		res := d.DoMulti(ctx, cmds...)
		arr, err := res[len(res)-1].ToArray()
		if err != nil {
			return err
		}
		for _, m := range arr[1:] {
			if n, err := m.AsInt64(); err == nil {
				killed += int(n)
			}
		}
		return nil
	})
	if err != nil {
		a.t.Fatalf("cut user %s: %v", name, err)
	}
	return killed
}

// trackingIDs returns the IDs of the connections of user name that have
// client tracking on (flag t).
func (a *admin) trackingIDs(name string) []int64 {
	a.t.Helper()
	list, err := a.do("CLIENT", "LIST").ToString()
	if err != nil {
		a.t.Fatalf("client list: %v", err)
	}
	var ids []int64
	for line := range strings.Lines(list) {
		f := clientFields(line)
		if f["user"] != name || !strings.Contains(f["flags"], "t") {
			continue
		}
		id, err := strconv.ParseInt(f["id"], 10, 64)
		if err != nil {
			a.t.Fatalf("client list: bad id in %q", line)
		}
		ids = append(ids, id)
	}
	return ids
}

// killTracking kills, by ID, every tracking connection of user name and
// returns how many it killed. The user stays enabled: its clients reconnect.
func (a *admin) killTracking(name string) int {
	a.t.Helper()
	n := 0
	for _, id := range a.trackingIDs(name) {
		if err := a.do("CLIENT", "KILL", "ID", strconv.FormatInt(id, 10)).Error(); err == nil {
			n++
		}
	}
	return n
}

func clientFields(line string) map[string]string {
	m := make(map[string]string)
	for _, kv := range strings.Fields(line) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// cmdstats returns INFO commandstats as command → calls, without the
// commands the test itself and connection upkeep send (info, ping, client,
// hello, acl, command).
func (a *admin) cmdstats() map[string]int64 {
	a.t.Helper()
	info, err := a.do("INFO", "commandstats").ToString()
	if err != nil {
		a.t.Fatalf("info commandstats: %v", err)
	}
	out := make(map[string]int64)
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, _ := strings.Cut(rest, ":")
		switch strings.SplitN(name, "|", 2)[0] {
		case "info", "ping", "client", "hello", "acl", "command", "dbsize", "config":
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

func (a *admin) dbsize() int64 {
	a.t.Helper()
	n, err := a.do("DBSIZE").AsInt64()
	if err != nil {
		a.t.Fatalf("dbsize: %v", err)
	}
	return n
}

// diffStats returns the commands whose call counts differ between before
// and after, with the difference.
func diffStats(before, after map[string]int64) map[string]int64 {
	d := make(map[string]int64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}
