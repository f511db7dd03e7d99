package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/thermoscache/thermos/cmd/bench/internal/trace"
	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
)

// Scenario names.
const (
	ScenarioHitRatio  = "hitratio"
	ScenarioPeers     = "peers"
	ScenarioStaleness = "staleness"
	ScenarioRestart   = "restart"
	ScenarioStampede  = "stampede"
)

// Defaults for Config's zero fields.
const (
	DefaultKeys      = 100_000
	DefaultOps       = 400_000
	DefaultDuration  = 2 * time.Second
	DefaultValueSize = 128
	DefaultWriteRate = 2000 // writes per second in the staleness scenario
	DefaultSeed      = 1
	// DefaultSizes are the cache sizes of the hit-ratio sweep, as shares of
	// Keys.
	DefaultSizes = "0.1%,1%,5%,10%,25%"
	// DefaultTraceDir is where the default trace files live, relative to the
	// working directory (the module root for go run ./cmd/bench).
	DefaultTraceDir = "../shared/traces"
	// DefaultCacheShare is the cache size of the latency and peers
	// scenarios, as a share of Keys.
	DefaultCacheShare = 0.1
)

// Values of Config.DiskReplay.
const (
	DiskReplaySmallest = "smallest" // at each trace's smallest size
	DiskReplayAll      = "all"      // at every size
	DiskReplayOff      = "off"      // never
)

// PasswordEnv is the environment variable cmd/bench reads Config.RedisPassword
// from when --redis-password is not given (with --redis), so the password
// need not appear in the process list.
const PasswordEnv = "THERMOS_BENCH_REDIS_PASSWORD"

// Errors of Config.validate, wrapped with the offending value.
var (
	// ErrConfig is returned for a flag value that cannot be used.
	ErrConfig = errors.New("bench: bad configuration")
	// ErrUnavailable is returned for a part that cannot run here: the
	// stampede scenario when the running binary cannot be re-executed.
	ErrUnavailable = errors.New("bench: scenario unavailable")
)

// Config is a benchmark run's settings; cmd/bench fills it from flags. The
// zero value of each field takes the default named on it.
type Config struct {
	// Scenarios to run, in order. Empty means every available scenario.
	Scenarios []string `json:"scenarios"`
	// Keys is the number of distinct keys of the synthetic workloads, and
	// the keys the restart scenario warms (at most MaxRestartKeys). Zero
	// means DefaultKeys.
	Keys int `json:"keys"`
	// Ops is the number of accesses per simulated hit-ratio run. Zero means
	// DefaultOps.
	Ops int `json:"ops"`
	// Duration is how long each timed run (latency, peers, staleness)
	// lasts. Zero means DefaultDuration.
	Duration time.Duration `json:"duration_ns"`
	// Theta is the zipfian skew in (0, 1). Zero means workload.DefaultTheta.
	Theta float64 `json:"theta"`
	// Workloads are the key distributions of the hit-ratio sweep
	// (zipfian, scrambled, uniform, hotspot). Empty means all four.
	Workloads []string `json:"workloads"`
	// Mix is the YCSB read/write mix (A, B, C, F) of the latency runs.
	// Empty means C (read only).
	Mix string `json:"mix"`
	// Traces are trace files replayed by the hit-ratio scenario, each
	// optionally suffixed with ":format" (arc, text, int32, int64). Nil means
	// the P3 and web07 traces in DefaultTraceDir when present; an empty
	// non-nil slice means none.
	Traces []string `json:"traces"`
	// TraceLimit caps the accesses replayed per trace. Zero means no cap.
	TraceLimit int `json:"trace_limit"`
	// TraceSizes are the cache sizes of trace replays: entry counts
	// ("4096") or shares of the trace's distinct keys ("5%"), comma
	// separated. Empty means each shared trace's usual sizes (P3: 4096 to
	// 131072, the ARC paper's; web07: 1000, 2000, 5000) and
	// DefaultTraceSizes for any other trace.
	TraceSizes string `json:"trace_sizes,omitempty"`
	// MemoryPolicies are the memory-tier eviction policies (tiered's
	// Options.MemoryPolicy, by tracking.Policy's names) the hit-ratio
	// scenario replays through tiered.Cache. Empty means every policy
	// tiered accepts.
	MemoryPolicies []string `json:"memory_policies"`
	// SimPolicies are the simulated peers' policies of the hit-ratio
	// scenario: lru, 2q, arc (golang-lru) and otter. Empty means all.
	SimPolicies []string `json:"sim_policies"`
	// DiskReplay says at which sizes traces are also replayed through
	// tiered.Cache's memory+disk layout (with the first memory policy; the
	// disk holds every key): DiskReplaySmallest, DiskReplayAll or
	// DiskReplayOff. Each such replay writes every miss to Pebble, several
	// times the cost of a memory replay. Empty means DiskReplaySmallest.
	DiskReplay string `json:"disk_replay"`
	// Sizes of the hit-ratio sweep: entry counts ("1000") or shares of
	// Keys ("1%"), comma separated. Empty means DefaultSizes.
	Sizes string `json:"sizes"`
	// Goroutines issuing requests in timed runs. Zero means 2×GOMAXPROCS.
	Goroutines int `json:"goroutines"`
	// ValueSize is the value length in bytes. Zero means DefaultValueSize.
	ValueSize int `json:"value_size"`
	// WriteRate is the staleness scenario's writes per second. Zero means
	// DefaultWriteRate.
	WriteRate int `json:"write_rate"`
	// Redis is the address of an existing Redis server (host:port on
	// loopback or elsewhere), or a comma-separated list of addresses of a
	// Redis Cluster's nodes (rueidis detects a cluster from any one of
	// them). Empty means start a private redis-server if the binary is on
	// PATH, or a private cluster with RedisCluster.
	Redis string `json:"redis"`
	// RedisCluster starts a private local Redis Cluster of
	// redisproc.DefaultClusterPrimaries primaries without replicas (needs
	// redis-server and redis-cli on PATH) instead of a single server, runs
	// the Redis scenarios against it and stops it at the end.
	RedisCluster bool `json:"redis_cluster,omitempty"`
	// RedisUser is the ACL user every client of the run authenticates as
	// with Redis. Empty means the default user. Needs Redis.
	RedisUser string `json:"redis_user,omitempty"`
	// RedisPassword is the password every client of the run authenticates
	// with. Empty means none. Needs Redis. It never appears in any output:
	// results.json leaves it out and a Secret formats as "[redacted]".
	RedisPassword Secret `json:"-"`
	// RedisTLSCA is a PEM file of CA certificates. Set, every client of
	// the run connects with TLS and trusts only these CAs; empty means
	// plain TCP. Needs Redis.
	RedisTLSCA string `json:"redis_tls_ca,omitempty"`
	// NoRedis skips everything that needs Redis.
	NoRedis bool `json:"no_redis"`
	// Out is the directory for report.html and results.json. Empty means
	// write no files.
	Out string `json:"out"`
	// Seed seeds every random stream. Zero means DefaultSeed.
	Seed uint64 `json:"seed"`
	// Processes is the stampede scenario's worker processes (K). Zero
	// means DefaultProcesses.
	Processes int `json:"processes"`
	// StampedeGoroutines is the goroutines per stampede worker (G). Zero
	// means DefaultStampedeGoroutines.
	StampedeGoroutines int `json:"stampede_goroutines"`
	// OriginDelay is how long the stampede scenario's origin takes per
	// call. Zero means DefaultOriginDelay.
	OriginDelay time.Duration `json:"origin_delay_ns"`
	// Quick shrinks the defaults (keys, ops, duration, trace accesses) for
	// a smoke run of a few seconds.
	Quick bool `json:"quick"`
}

// Available lists the scenarios that can run today, in default order.
func Available() []string {
	return []string{ScenarioHitRatio, ScenarioPeers, ScenarioStaleness, ScenarioRestart, ScenarioStampede}
}

// processes returns the stampede's worker count.
func (c Config) processes() int {
	if c.Processes > 0 {
		return c.Processes
	}
	return DefaultProcesses
}

// stampedeGoroutines returns the goroutines per stampede worker.
func (c Config) stampedeGoroutines() int {
	if c.StampedeGoroutines > 0 {
		return c.StampedeGoroutines
	}
	return DefaultStampedeGoroutines
}

// originDelay returns the stampede origin's duration.
func (c Config) originDelay() time.Duration {
	if c.OriginDelay > 0 {
		return c.OriginDelay
	}
	return DefaultOriginDelay
}

// withDefaults returns a copy of c with zero fields set.
func (c Config) withDefaults() Config {
	if c.Quick {
		if c.Keys == 0 {
			c.Keys = 10_000
		}
		if c.Ops == 0 {
			c.Ops = 50_000
		}
		if c.Duration == 0 {
			c.Duration = 300 * time.Millisecond
		}
		if c.TraceLimit == 0 {
			c.TraceLimit = 200_000
		}
		if c.Sizes == "" {
			c.Sizes = "1%,10%,50%"
		}
	}
	if c.Keys == 0 {
		c.Keys = DefaultKeys
	}
	if c.Ops == 0 {
		c.Ops = DefaultOps
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Theta == 0 {
		c.Theta = workload.DefaultTheta
	}
	if len(c.Workloads) == 0 {
		c.Workloads = []string{workload.Zipfian, workload.ScrambledZipfian, workload.Uniform, workload.Hotspot}
	}
	if c.Mix == "" {
		c.Mix = "C"
	}
	if c.Sizes == "" {
		c.Sizes = DefaultSizes
	}
	if c.ValueSize == 0 {
		c.ValueSize = DefaultValueSize
	}
	if c.WriteRate == 0 {
		c.WriteRate = DefaultWriteRate
	}
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = Available()
	}
	if c.DiskReplay == "" {
		c.DiskReplay = DiskReplaySmallest
	}
	if len(c.MemoryPolicies) == 0 {
		c.MemoryPolicies = memoryPolicyNames()
	}
	if len(c.SimPolicies) == 0 {
		c.SimPolicies = simPolicies()
	}
	c.MemoryPolicies = slices.Clone(c.MemoryPolicies)
	c.SimPolicies = slices.Clone(c.SimPolicies)
	c.Scenarios = slices.Clone(c.Scenarios)
	c.Workloads = slices.Clone(c.Workloads)
	if c.Traces != nil {
		c.Traces = slices.Clone(c.Traces)
	}
	return c
}

// validate checks a defaulted Config.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	seen := map[string]bool{}
	for _, s := range c.Scenarios {
		switch {
		case seen[s]:
			return bad("scenario %q listed twice", s)
		case !slices.Contains(Available(), s):
			return bad("unknown scenario %q (available: %s)", s, strings.Join(Available(), ", "))
		}
		seen[s] = true
	}
	switch {
	case c.Keys < 1:
		return bad("--keys %d must be positive", c.Keys)
	case c.Keys > MaxRestartKeys && slices.Contains(c.Scenarios, ScenarioRestart):
		return bad("--keys %d: the restart scenario warms every key into memory, disk and Redis; at most %d", c.Keys, MaxRestartKeys)
	case c.Ops < 1:
		return bad("--ops %d must be positive", c.Ops)
	case c.Duration <= 0:
		return bad("--duration %v must be positive", c.Duration)
	case !(c.Theta > 0 && c.Theta < 1):
		return bad("--zipf-theta %v must be in (0, 1)", c.Theta)
	case c.Goroutines < 0:
		return bad("--goroutines %d must not be negative", c.Goroutines)
	case c.ValueSize < 1 || c.ValueSize > 1<<20:
		return bad("--value-size %d must be in [1, 1 MiB]", c.ValueSize)
	case c.WriteRate < 1:
		return bad("--write-rate %d must be positive", c.WriteRate)
	case c.TraceLimit < 0:
		return bad("--trace-limit %d must not be negative", c.TraceLimit)
	case c.Processes < 0 || c.Processes > 64:
		return bad("--processes %d must be in [0, 64]", c.Processes)
	case c.StampedeGoroutines < 0:
		return bad("--stampede-goroutines %d must not be negative", c.StampedeGoroutines)
	case c.OriginDelay < 0:
		return bad("--origin-delay %v must not be negative", c.OriginDelay)
	case c.NoRedis && c.Redis != "":
		return bad("--redis and --no-redis contradict each other")
	case c.RedisCluster && c.Redis != "":
		return bad("--redis and --redis-cluster contradict each other (--redis takes a cluster's node addresses)")
	case c.RedisCluster && c.NoRedis:
		return bad("--redis-cluster and --no-redis contradict each other")
	case c.Redis == "" && (c.RedisUser != "" || c.RedisPassword != "" || c.RedisTLSCA != ""):
		return bad("--redis-user, --redis-password and --redis-tls-ca need --redis ADDR (the private servers take no credentials)")
	}
	for _, a := range c.redisAddrs() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad("--redis %q: %v", a, err)
		}
	}
	if c.Redis != "" && len(c.redisAddrs()) == 0 {
		return bad("--redis %q names no address", c.Redis)
	}
	for _, w := range c.Workloads {
		if _, err := workload.New(workload.Spec{Distribution: w, Keys: 1, Theta: c.Theta}, workload.Seed(0, 0)); err != nil {
			return bad("--workload: %v", err)
		}
	}
	if _, err := workload.MixByName(c.Mix); err != nil {
		return bad("--mix: %v", err)
	}
	if _, err := c.sizes(); err != nil {
		return err
	}
	for _, t := range c.Traces {
		if _, _, err := splitTrace(t); err != nil {
			return bad("--trace %q: %v", t, err)
		}
	}
	if c.TraceSizes != "" {
		if _, err := parseSizes(c.TraceSizes, 1000, "--trace-sizes"); err != nil {
			return err
		}
	}
	switch c.DiskReplay {
	case DiskReplaySmallest, DiskReplayAll, DiskReplayOff:
	default:
		return bad("--disk-replay %q: want %s, %s or %s", c.DiskReplay, DiskReplaySmallest, DiskReplayAll, DiskReplayOff)
	}
	if _, err := c.selectedMemoryPolicies(); err != nil {
		return err
	}
	for _, p := range c.SimPolicies {
		if !slices.Contains(simPolicies(), p) {
			return bad("--sim-policies: %q is not a simulated policy (available: %s)", p, strings.Join(simPolicies(), ", "))
		}
	}
	return nil
}

// redisAddrs returns the addresses listed in Redis.
func (c Config) redisAddrs() []string {
	var out []string
	for a := range strings.SplitSeq(c.Redis, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// redacted is how a Secret prints.
const redacted = "[redacted]"

// Secret is a string that never prints: with any fmt verb, as JSON and as
// an slog value it is "[redacted]", so a Config holding a password can be
// formatted, logged or written without revealing it. string(s) is the
// value.
type Secret string

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns "[redacted]", for %#v.
func (Secret) GoString() string { return redacted }

// Format writes "[redacted]" whatever the verb.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// MarshalJSON returns "[redacted]" as a JSON string.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// LogValue returns "[redacted]".
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// sizes parses Sizes into entry counts, ascending and distinct.
func (c Config) sizes() ([]int, error) { return parseSizes(c.Sizes, c.Keys, "--sizes") }

// parseSizes parses a comma-separated list of entry counts ("1000") and
// shares of keys ("5%") into entry counts, ascending and distinct.
func parseSizes(list string, keys int, flag string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		var n int
		if p, ok := strings.CutSuffix(f, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil || !(v > 0 && v <= 100) {
				return nil, fmt.Errorf("%w: %s: %q is not a share in (0, 100] %%", ErrConfig, flag, f)
			}
			n = max(1, int(v/100*float64(keys)))
		} else {
			v, err := strconv.Atoi(f)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("%w: %s: %q is neither a positive entry count nor a share like 5%%", ErrConfig, flag, f)
			}
			n = v
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// splitTrace splits "path[:format]". Without a format the trace's content
// tells it (trace.NewReader), when the trace is opened.
func splitTrace(s string) (string, trace.Format, error) {
	path, f := s, trace.Auto
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		if pf, err := trace.ParseFormat(s[i+1:]); err == nil {
			path, f = s[:i], pf
		}
	}
	if path == "" {
		return "", "", errors.New("empty path")
	}
	return path, f, nil
}
