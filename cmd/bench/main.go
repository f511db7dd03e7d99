// Command bench measures cache layouts: hit ratios by size and eviction
// policy on synthetic workloads and real traces, thermos's layouts
// (memory, memory+Redis, memory+disk+Redis) per tier, read latency and
// throughput beside other Go caches (rueidis's client-side cache,
// golang-lru, otter, plain Redis) as ratios to thermos, invalidation lag
// under an external writer, warm vs cold restarts, and stampedes across
// processes (it re-executes itself as the workers). Run it with no flags
// for the default suite:
//
//	go run ./cmd/bench
//
// It starts a private redis-server on a free loopback port when the binary
// is on PATH, a private three-primary Redis Cluster with --redis-cluster,
// or uses --redis ADDR[,ADDR...] (a cluster's nodes are found from any
// one of them) with --redis-user, --redis-password (better: the
// THERMOS_BENCH_REDIS_PASSWORD environment variable, which ps does not
// show) and --redis-tls-ca FILE. It prints aligned tables and Go benchmark
// lines (compare two runs with benchstat) on stdout, and writes report.html
// and results.json to --out. All the work is in cmd/bench/internal/bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/thermoscache/thermos/cmd/bench/internal/bench"
	"github.com/thermoscache/thermos/cmd/bench/internal/workload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if os.Getenv(bench.WorkerEnv) != "" {
		// Re-executed by the stampede scenario as one of its processes.
		if err := bench.Worker(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
			os.Exit(1)
		}
		return
	}
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// errUsage marks a flag parsing error already reported by the flag package.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	return bench.Run(ctx, cfg, stdout, stderr)
}

// parse turns command-line flags, and the password in the environment
// variable bench.PasswordEnv (read through getenv), into a bench.Config.
func parse(args []string, getenv func(string) string, stderr io.Writer) (bench.Config, error) {
	var cfg bench.Config
	var password string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var scenarios, workloads, traces, memPolicies, simPolicies string
	var noTraces bool
	fs.StringVar(&scenarios, "scenarios", "", "comma-separated scenarios to run: "+strings.Join(bench.Available(), ", ")+" (default all)")
	fs.IntVar(&cfg.Keys, "keys", bench.DefaultKeys, fmt.Sprintf("distinct keys in the synthetic workloads, and the keys the restart scenario warms (at most %d with restart)", bench.MaxRestartKeys))
	fs.IntVar(&cfg.Ops, "ops", bench.DefaultOps, "accesses per simulated hit-ratio run")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "length of each timed run (latency, peers, staleness)")
	fs.Float64Var(&cfg.Theta, "zipf-theta", workload.DefaultTheta, "zipfian skew θ, in (0, 1)")
	fs.StringVar(&workloads, "workload", "", "comma-separated key distributions of the hit-ratio sweep (default all):\n"+strings.Join(bench.WorkloadHelp(), "\n"))
	fs.StringVar(&cfg.Mix, "mix", "C", "YCSB read/write mix of the memory-only latency runs: A (50/50), B (95/5), C (read only), F (read-modify-write)")
	fs.StringVar(&traces, "trace", "", "comma-separated trace files to replay, each path[:format] with format arc, text, int32 or int64;\n"+
		"without one the format is detected from the content, and a trace that fits several formats (or not the one named) is refused\n"+
		"(default the P3 and web07 traces in "+bench.DefaultTraceDir+" when present)")
	fs.StringVar(&cfg.TraceSizes, "trace-sizes", "", "cache sizes of trace replays: entry counts (4096) or shares of the trace's distinct keys (5%)\n"+
		"(default P3: 4096,16384,32768,131072; web07: 1000,2000,5000; other traces: "+bench.DefaultTraceSizes+")")
	fs.StringVar(&memPolicies, "memory-policies", "", "comma-separated memory-tier policies replayed through tiered.Cache (tiered Options.MemoryPolicy): "+
		strings.Join(bench.MemoryPolicyNames(), ", ")+" (default all)")
	fs.StringVar(&simPolicies, "sim-policies", "", "comma-separated simulated peers of the hit-ratio scenario: "+strings.Join(bench.SimPolicyNames(), ", ")+" (default all)")
	fs.StringVar(&cfg.DiskReplay, "disk-replay", bench.DiskReplaySmallest, "replay traces through thermos memory+disk too: at each trace's "+bench.DiskReplaySmallest+" size, at "+bench.DiskReplayAll+" sizes, or "+bench.DiskReplayOff)
	fs.BoolVar(&noTraces, "no-traces", false, "replay no trace")
	fs.IntVar(&cfg.TraceLimit, "trace-limit", 0, "replay at most this many accesses per trace (0: all)")
	fs.StringVar(&cfg.Sizes, "sizes", bench.DefaultSizes, "cache sizes of the hit-ratio sweep: entry counts (1000) or shares of --keys (5%)")
	fs.IntVar(&cfg.Goroutines, "goroutines", 0, "request goroutines in timed runs (default 2×GOMAXPROCS)")
	fs.IntVar(&cfg.ValueSize, "value-size", bench.DefaultValueSize, "value length in bytes")
	fs.IntVar(&cfg.WriteRate, "write-rate", bench.DefaultWriteRate, "writes per second of the staleness scenario's external writer")
	fs.IntVar(&cfg.Processes, "processes", bench.DefaultProcesses, "worker processes (K) of the stampede scenario")
	fs.IntVar(&cfg.StampedeGoroutines, "stampede-goroutines", bench.DefaultStampedeGoroutines, "goroutines per stampede worker (G)")
	fs.DurationVar(&cfg.OriginDelay, "origin-delay", bench.DefaultOriginDelay, "duration of one call to the stampede scenario's slow origin")
	fs.StringVar(&cfg.Redis, "redis", "", "address of an existing Redis to use, or comma-separated addresses of a Redis Cluster's nodes\n"+
		"(default: start a private redis-server if it is on PATH)")
	fs.BoolVar(&cfg.RedisCluster, "redis-cluster", false, "start a private local Redis Cluster (3 primaries, no replicas; needs redis-server and redis-cli) instead of a single server")
	fs.StringVar(&cfg.RedisUser, "redis-user", "", "ACL user of every Redis connection (with --redis; default the default user)")
	fs.StringVar(&password, "redis-password", "", "password of every Redis connection (with --redis); better: set "+bench.PasswordEnv+", which ps does not show")
	fs.StringVar(&cfg.RedisTLSCA, "redis-tls-ca", "", "PEM file of CA certificates: connect to Redis with TLS, trusting only these (with --redis)")
	fs.BoolVar(&cfg.NoRedis, "no-redis", false, "run only the parts that need no Redis")
	fs.StringVar(&cfg.Out, "out", "bench-out", "directory for report.html and results.json (empty: write no files)")
	seed := fs.Uint64("seed", bench.DefaultSeed, "seed of every random stream")
	fs.BoolVar(&cfg.Quick, "quick", false, "small sizes for a smoke run of a few seconds")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: go run ./cmd/bench [flags]\n\nMeasures cache layouts: hit ratio, latency, staleness, and peers. Flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return cfg, errUsage
	}
	cfg.Seed = *seed
	cfg.RedisPassword = bench.Secret(password)
	if password == "" && cfg.Redis != "" {
		cfg.RedisPassword = bench.Secret(getenv(bench.PasswordEnv))
	}
	cfg.Scenarios = splitList(scenarios)
	cfg.Workloads = splitList(workloads)
	cfg.MemoryPolicies = splitList(memPolicies)
	cfg.SimPolicies = splitList(simPolicies)
	switch {
	case noTraces && traces != "":
		return cfg, fmt.Errorf("%w: --trace and --no-traces contradict each other", bench.ErrConfig)
	case noTraces:
		cfg.Traces = []string{}
	case traces != "":
		cfg.Traces = splitList(traces)
	}
	// --quick shrinks the defaults, so leave a flag at its zero value unless
	// it was given.
	if cfg.Quick {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		if !given["keys"] {
			cfg.Keys = 0
		}
		if !given["ops"] {
			cfg.Ops = 0
		}
		if !given["duration"] {
			cfg.Duration = 0
		}
		if !given["sizes"] {
			cfg.Sizes = ""
		}
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
