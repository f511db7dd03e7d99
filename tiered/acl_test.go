package tiered

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

const aclPassword = "acl-user-secret"

// aclRoutes are the routes of the least-privilege tests: a route on every
// tier, one on Redis alone.
func aclRoutes() []Route {
	return []Route{
		{Prefix: "app:", Tiers: Memory | Disk | Redis},
		{Prefix: "shared:", Tiers: Redis},
		{Prefix: "raw:", Tiers: Memory | Disk | Redis, Raw: true},
	}
}

// aclServer starts a server whose default user needs a password, so only
// the users a test creates can connect.
func aclServer(t *testing.T) *redistest.Server {
	t.Helper()
	return redistest.Start(t, &redistest.Options{Args: []string{"--requirepass", "admin-" + aclPassword}})
}

// aclUser creates user with the given rules.
func aclUser(t *testing.T, srv *redistest.Server, user string, rules []string) {
	t.Helper()
	srv.SetUser(user, append([]string{"reset", "on", ">" + aclPassword}, rules...)...)
}

// privateDir is a temporary directory only this user may use, as the
// disk tier wants it.
func privateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// aclOpts are the options of a cache connecting as user.
func aclOpts(srv *redistest.Server, user, dir string, logs *syncBuffer) *Options {
	return &Options{
		Redis:  &rueidis.ClientOption{InitAddress: []string{srv.Addr()}, Username: user, Password: aclPassword},
		Routes: aclRoutes(),
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// aclLog returns the commands (or keys, channels) the server refused since
// the last ACL LOG RESET, as "reason:object" strings.
func aclLog(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	out := srv.CLI("--no-raw", "ACL", "LOG")
	var got []string
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		// redis-cli prints each entry's fields as "N) "name"" then
		// "N+1) "value"".
		for _, f := range []string{`"reason"`, `"object"`} {
			if strings.HasSuffix(strings.TrimSpace(l), f) && i+1 < len(lines) {
				v := lines[i+1]
				v = strings.Trim(strings.TrimSpace(v[strings.Index(v, ")")+1:]), `"`)
				got = append(got, v)
			}
		}
	}
	var pairs []string
	for i := 0; i+1 < len(got); i += 2 {
		pairs = append(pairs, got[i]+":"+got[i+1])
	}
	slices.Sort(pairs)
	return slices.Compact(pairs)
}

// A user created with exactly the documented grants, with or without
// scripting, runs every public operation — Get, GetMany, Set, Delete,
// InvalidatePrefix, GetOrLoad with the herd shared by two caches, and a
// warm restart that revalidates its disk entries — and Redis refuses it
// nothing but what the cache probes on purpose or rueidis tolerates.
func TestACLDocumentedGrantsRunEverything(t *testing.T) {
	for _, scripts := range []bool{true, false} {
		t.Run(fmt.Sprintf("scripts=%v", scripts), func(t *testing.T) {
			srv := aclServer(t)
			o := (&Options{Routes: aclRoutes()}).withDefaults()
			aclUser(t, srv, "thermos", aclRules(&o, scripts))
			srv.CLI("ACL", "LOG", "RESET")
			ctx := t.Context()
			var logs syncBuffer
			dirA := privateDir(t)
			a := openT(t, aclOpts(srv, "thermos", dirA, &logs))
			b := openT(t, aclOpts(srv, "thermos", privateDir(t), &logs))

			if err := a.Set(ctx, "app:1", []byte("one"), 0); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if err := a.Set(ctx, "shared:1", []byte("s1"), 0); err != nil {
				t.Fatalf("Set shared: %v", err)
			}
			// A raw value another program wrote, read through to disk.
			if _, err := srv.Do("SET", "raw:1", "plain"); err != nil {
				t.Fatal(err)
			}
			if v, ok, err := a.Get(ctx, "raw:1"); err != nil || !ok || string(v) != "plain" {
				t.Fatalf("Get raw = %q, %v, %v", v, ok, err)
			}
			if err := a.Set(ctx, "app:2", []byte("two"), 0); err != nil {
				t.Fatal(err)
			}
			if v, ok, err := b.Get(ctx, "app:1"); err != nil || !ok || string(v) != "one" {
				t.Fatalf("Get from the other cache = %q, %v, %v", v, ok, err)
			}
			for i, r := range b.GetMany(ctx, []string{"app:1", "shared:1", "shared:none"}) {
				want := []string{"one", "s1", ""}[i]
				if r.Err != nil || r.OK != (want != "") || string(r.Value) != want {
					t.Fatalf("GetMany[%d] = %q, %v, %v; want %q", i, r.Value, r.OK, r.Err, want)
				}
			}

			// The herd across the two caches: one load for 8 callers.
			var loads atomic.Int64
			release := make(chan struct{})
			loader := LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
				loads.Add(1)
				<-release
				return []byte("loaded"), nil
			})
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := range 8 {
				c := []*Cache{a, b}[i%2]
				wg.Go(func() {
					v, ok, err := c.GetOrLoad(ctx, "app:herd", loader)
					if err == nil && (!ok || string(v) != "loaded") {
						err = fmt.Errorf("got %q, %v", v, ok)
					}
					errs <- err
				})
			}
			waitFor(t, 10*time.Second, func() bool { return loads.Load() >= 1 }, "the load to start")
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("GetOrLoad: %v", err)
				}
			}
			if n := loads.Load(); n != 1 {
				t.Errorf("%d loads across the two caches, want 1", n)
			}
			if v, err := srv.Do("GET", "app:herd"); err != nil || !strings.Contains(v, "loaded") {
				t.Errorf("redis holds %q, %v for app:herd; want the loaded value", v, err)
			}

			// The fills of raw:1 and app:herd may have lost the race with
			// the invalidations of the writes they read (as they should):
			// read until memory holds them, so the disk does too.
			for _, k := range []string{"raw:1", "app:herd"} {
				waitFor(t, 10*time.Second, func() bool {
					_, _, _ = a.Get(ctx, k)
					_, _, ok := a.mem.Peek(k)
					return ok
				}, k+" in a's memory")
			}
			if err := a.Delete(ctx, "shared:1"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := a.Set(ctx, "app:gone:1", []byte("x"), 0); err != nil {
				t.Fatal(err)
			}
			if n, err := a.InvalidatePrefix(ctx, "app:gone:"); err != nil || n != 1 {
				t.Fatalf("InvalidatePrefix = %d, %v; want 1", n, err)
			}

			// A warm restart: the disk entries come back unverified and are
			// revalidated against Redis, with or without scripts: kept
			// while Redis holds their version (app:1, raw:1), dropped for
			// the one changed while a was down (app:2).
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Set(ctx, "app:2", []byte("deux"), 0); err != nil {
				t.Fatal(err)
			}
			a2 := openT(t, aclOpts(srv, "thermos", dirA, &logs))
			waitFor(t, 10*time.Second, func() bool { return a2.Stats().RevalidationPasses >= 1 }, "a revalidation pass")
			if st := a2.Stats(); st.Warmed != 4 || st.Revalidated < 3 || st.Dropped < 1 {
				t.Errorf("after the restart: %d warmed, %d revalidated, %d dropped; want 4, >= 3, >= 1", st.Warmed, st.Revalidated, st.Dropped)
			}
			for k, want := range map[string]string{"app:1": "one", "raw:1": "plain", "app:2": "deux"} {
				if v, ok, err := a2.Get(ctx, k); err != nil || !ok || string(v) != want {
					t.Errorf("Get(%s) after the restart = %q, %v, %v; want %q", k, v, ok, err, want)
				}
			}

			// What Redis refused: on purpose, the script probes when the
			// user may not run them, and ACL WHOAMI (the checks fall back
			// to probes); rueidis's CLUSTER SLOTS (it falls back to a
			// single node on any refusal of it), and the resets it sends
			// when it takes back a dedicated connection, whose refusal it
			// ignores (see "Redis ACL" in the package documentation).
			allowed := []string{"command:cluster|slots", "command:acl|whoami", "command:punsubscribe", "command:sunsubscribe"}
			var required []string
			if scripts {
				allowed = append(allowed, "command:discard")
			} else {
				required = []string{"command:eval", "command:evalsha"}
				allowed = append(allowed, required...)
			}
			got := aclLog(t, srv)
			for _, e := range got {
				if !slices.Contains(allowed, e) {
					t.Errorf("Redis refused %s (ACL LOG %v)", e, got)
				}
			}
			for _, e := range required {
				if !slices.Contains(got, e) {
					t.Errorf("ACL LOG %v lacks %s: the scripts were not probed", got, e)
				}
			}
			warns := logs.String()
			if scripts && warns != "" {
				t.Errorf("warnings with every documented right granted:\n%s", warns)
			}
			if !scripts && !strings.Contains(warns, "may not run scripts") {
				t.Errorf("no warning that scripts are refused:\n%s", warns)
			}
		})
	}
}

// aclOpenBound is how long Open may take to refuse a user.
const aclOpenBound = 2 * time.Second

// A user missing any one documented grant is refused at Open, the error
// naming the grant, or — for the grants the cache can do without — Open
// succeeds, warns naming it, and the herd still loads once for two caches.
func TestACLMissingGrant(t *testing.T) {
	srv := aclServer(t)
	o := (&Options{Routes: aclRoutes()}).withDefaults()
	type row struct {
		rules   []string // the documented set
		drop    string
		degrade string // "" refused at Open; else in the warning
		names   string // in the error or the warning
	}
	var rows []row
	for _, scripts := range []bool{true, false} {
		full := aclRules(&o, scripts)
		for _, r := range full {
			if !strings.HasPrefix(r, "+") && !strings.HasPrefix(r, "~") && !strings.HasPrefix(r, "&") {
				continue
			}
			rw := row{rules: full, drop: r, names: strings.TrimPrefix(r, "+")}
			switch r {
			case "+evalsha", "+eval":
				// Neither scripts nor transactions: refused. With the
				// transactions' rights too it degrades (rows below).
				// ACL rules apply in order: append, never sort.
				both := slices.Clone(full)
				for _, x := range aclRules(&o, false) {
					if !slices.Contains(both, x) {
						both = append(both, x)
					}
				}
				rows = append(rows, row{rules: both, drop: r, degrade: "may not run scripts", names: r})
			case "&herd:done:*", "+publish", "+subscribe", "+unsubscribe":
				rw.degrade = "notification channels"
			case "~app:*", "~raw:*":
				// tracking's read check names the prefix
				rw.names = `"` + strings.TrimSuffix(strings.TrimPrefix(r, "~"), "*") + `"`
			case "~shared:*", "~herd:lock:*":
				rw.names = r
			}
			if !scripts && rw.degrade == "" && !slices.Contains([]string{"+watch", "+unwatch", "+multi", "+exec", "+discard"}, r) {
				continue // the same rows as with scripts
			}
			rows = append(rows, rw)
		}
	}
	for i, tt := range rows {
		t.Run(fmt.Sprintf("without %s/%d", tt.drop, len(tt.rules)), func(t *testing.T) {
			user := fmt.Sprintf("u%d", i)
			aclUser(t, srv, user, slices.DeleteFunc(slices.Clone(tt.rules), func(r string) bool { return r == tt.drop }))
			var logs syncBuffer
			start := time.Now()
			c, err := Open(t.Context(), aclOpts(srv, user, privateDir(t), &logs))
			took := time.Since(start)
			if took > aclOpenBound {
				t.Errorf("Open took %v, want <= %v", took, aclOpenBound)
			}
			if tt.degrade == "" {
				if c != nil {
					c.Close()
				}
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.names) {
					t.Fatalf("Open = %v, want ErrRefused naming %s", err, tt.names)
				}
				var re *RightsError
				if errors.As(err, &re) && !slices.Contains(re.Missing, tt.drop) {
					t.Errorf("RightsError.Missing = %v, want %s in it", re.Missing, tt.drop)
				}
				t.Logf("refused in %v: %v", took, err)
				return
			}
			if err != nil {
				t.Fatalf("Open = %v; want it to degrade without %s", err, tt.drop)
			}
			t.Cleanup(func() { c.Close() })
			if w := logs.String(); !strings.Contains(w, tt.degrade) || !strings.Contains(w, tt.names) {
				t.Errorf("warnings = %q, want one saying %q and naming %s", w, tt.degrade, tt.names)
			}
			// Degraded, the herd still loads once for two caches.
			other := openT(t, aclOpts(srv, user, privateDir(t), &logs))
			var loads atomic.Int64
			release := make(chan struct{})
			loader := LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
				loads.Add(1)
				<-release
				return []byte("v"), nil
			})
			var wg sync.WaitGroup
			for _, x := range []*Cache{c, other, c, other} {
				wg.Go(func() {
					if v, ok, err := x.GetOrLoad(t.Context(), "app:k:"+user, loader); err != nil || !ok || string(v) != "v" {
						t.Errorf("GetOrLoad = %q, %v, %v", v, ok, err)
					}
				})
			}
			waitFor(t, 10*time.Second, func() bool { return loads.Load() >= 1 }, "the load")
			close(release)
			wg.Wait()
			if n := loads.Load(); n != 1 {
				t.Errorf("%d loads, want 1", n)
			}
		})
	}
}

// A user who may run ACL WHOAMI and ACL DRYRUN is checked with them: no
// probe reaches the keyspace, the error names the user, and the same
// rights are found missing.
func TestACLDryRun(t *testing.T) {
	srv := aclServer(t)
	o := (&Options{Routes: aclRoutes()}).withDefaults()
	full := append(aclRules(&o, true), "+acl|whoami", "+acl|dryrun")
	without := func(drop string) []string {
		return slices.DeleteFunc(slices.Clone(full), func(r string) bool { return r == drop })
	}

	aclUser(t, srv, "dry", full)
	srv.CLI("ACL", "LOG", "RESET")
	var logs syncBuffer
	openT(t, aclOpts(srv, "dry", privateDir(t), &logs))
	for _, e := range aclLog(t, srv) {
		if !slices.Contains([]string{"command:cluster|slots", "command:discard", "command:punsubscribe", "command:sunsubscribe"}, e) {
			t.Errorf("ACL LOG has %s: a probe was sent although ACL DRYRUN was allowed", e)
		}
	}

	aclUser(t, srv, "dry-nolock", without("~herd:lock:*"))
	_, err := Open(t.Context(), aclOpts(srv, "dry-nolock", privateDir(t), &logs))
	var re *RightsError
	if !errors.As(err, &re) || re.User != "dry-nolock" || !slices.Equal(re.Missing, []string{"~herd:lock:*"}) || !errors.Is(err, ErrRefused) {
		t.Fatalf("Open without the lock keys = %v, want a RightsError of user dry-nolock missing ~herd:lock:*", err)
	}

	aclUser(t, srv, "dry-nochan", without("&herd:done:*"))
	logs = syncBuffer{}
	openT(t, aclOpts(srv, "dry-nochan", privateDir(t), &logs))
	if w := logs.String(); !strings.Contains(w, "notification channels") || !strings.Contains(w, "&herd:done:*") {
		t.Errorf("warnings = %q, want one naming &herd:done:*", w)
	}
}

// Lock keys and channels follow LockPrefix and ChannelPrefix, and the
// rights checked follow them: a user granted only the configured prefixes
// runs the herd; braces are refused as configuration errors.
func TestACLCustomHerdPrefixes(t *testing.T) {
	srv := aclServer(t)
	o := (&Options{Routes: aclRoutes(), LockPrefix: "svc:lk:", ChannelPrefix: "svc:ch:"}).withDefaults()
	rules := aclRules(&o, true)
	if !slices.Contains(rules, "~svc:lk:*") || !slices.Contains(rules, "&svc:ch:*") || slices.Contains(rules, "~herd:lock:*") {
		t.Fatalf("rules %v do not follow the prefixes", rules)
	}
	aclUser(t, srv, "svc", rules)
	var logs syncBuffer
	opts := aclOpts(srv, "svc", privateDir(t), &logs)
	opts.LockPrefix, opts.ChannelPrefix = "svc:lk:", "svc:ch:"
	c := openT(t, opts)
	var seen atomic.Bool
	v, ok, err := c.GetOrLoad(t.Context(), "app:custom", LoaderFunc(func(ctx context.Context, key string) ([]byte, error) {
		// While loading, the lease is held under the configured prefix.
		n, err := srv.Do("KEYS", "svc:lk:*") // an array: Do returns its length
		seen.Store(err == nil && n == "1")
		return []byte("v"), nil
	}))
	if err != nil || !ok || string(v) != "v" {
		t.Fatalf("GetOrLoad = %q, %v, %v", v, ok, err)
	}
	if !seen.Load() {
		t.Error("no lock key under svc:lk: while loading")
	}
	if w := logs.String(); w != "" {
		t.Errorf("warnings: %s", w)
	}
	for _, bad := range []Options{{LockPrefix: "a{b"}, {ChannelPrefix: "}"}, {LockPrefix: "x:", ChannelPrefix: "x:"}} {
		if _, err := Open(t.Context(), &bad); !errors.Is(err, ErrConfig) {
			t.Errorf("Open(LockPrefix %q, ChannelPrefix %q) = %v, want ErrConfig", bad.LockPrefix, bad.ChannelPrefix, err)
		}
	}
}

// The ACL lines in the README and the package documentation are the rules
// the least-privilege tests grant (aclRules), for their example routes.
func TestACLRulesDocumented(t *testing.T) {
	docs := []struct {
		file   string
		routes []Route
	}{
		{"../README.md", []Route{{Prefix: "profile:", Tiers: Memory | Disk | Redis}, {Prefix: "flag:", Tiers: Memory | Redis}, {Prefix: "rl:", Tiers: Memory}}},
		{"doc.go", []Route{{Prefix: "app:", Tiers: Memory | Redis}}},
	}
	for _, d := range docs {
		b, err := os.ReadFile(d.file)
		if err != nil {
			t.Fatal(err)
		}
		o := (&Options{Routes: d.routes}).withDefaults()
		for _, scripts := range []bool{true, false} {
			line := "ACL SETUSER thermos on >PASSWORD " + strings.Join(aclRules(&o, scripts), " ")
			if !strings.Contains(string(b), line+"\n") {
				t.Errorf("%s does not hold the line (scripts %v):\n%s", d.file, scripts, line)
			}
		}
	}
}

// With Redis down at Open, the rights are checked when it comes up: a
// missing one is logged as an ERROR naming it.
func TestACLCheckedOnceRedisConnects(t *testing.T) {
	o := (&Options{Routes: aclRoutes()}).withDefaults()
	rules := slices.DeleteFunc(aclRules(&o, true), func(r string) bool { return r == "~herd:lock:*" })
	// The user is in the server's configuration, so it survives the
	// restart below.
	args := append([]string{"--requirepass", "admin-" + aclPassword, "--user", "late", "on", ">" + aclPassword}, rules...)
	srv := redistest.Start(t, &redistest.Options{Args: args})
	srv.Stop()
	var logs syncBuffer
	opts := aclOpts(srv, "late", privateDir(t), &logs)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))
	openT(t, opts)
	srv.Restart()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "~herd:lock:*") }, "an ERROR naming ~herd:lock:*")
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("logs = %s, want an ERROR", logs.String())
	}
}
