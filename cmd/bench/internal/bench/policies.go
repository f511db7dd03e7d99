package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tracking"
)

// maxPolicyValue bounds the search for tracking's policies.
const maxPolicyValue = 64

// memoryPolicies returns every eviction policy tiered.Open accepts for its
// memory tier (Options.MemoryPolicy), in tracking's order. They are found
// by trying tracking.Policy's values, named by their String method, so a
// policy added to tracking appears in the benchmark with no change here.
var memoryPolicies = sync.OnceValue(func() []tracking.Policy {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out []tracking.Policy
	for p := range tracking.Policy(maxPolicyValue) {
		c, err := tiered.Open(context.Background(), &tiered.Options{MemoryPolicy: p, MemoryBytes: 1 << 20, Logger: quiet})
		if err != nil {
			continue // not a policy, or one tracking does not offer (ARC)
		}
		_ = c.Close()
		out = append(out, p)
	}
	return out
})

// memoryPolicyNames returns the names of memoryPolicies.
func memoryPolicyNames() []string {
	var out []string
	for _, p := range memoryPolicies() {
		out = append(out, p.String())
	}
	return out
}

// selectedMemoryPolicies returns the policies named in c.MemoryPolicies.
func (c Config) selectedMemoryPolicies() ([]tracking.Policy, error) {
	var out []tracking.Policy
	for _, name := range c.MemoryPolicies {
		i := slices.IndexFunc(memoryPolicies(), func(p tracking.Policy) bool { return strings.EqualFold(p.String(), name) })
		if i < 0 {
			return nil, fmt.Errorf("%w: --memory-policies: %q is not a memory-tier policy (available: %s)",
				ErrConfig, name, strings.Join(memoryPolicyNames(), ", "))
		}
		out = append(out, memoryPolicies()[i])
	}
	return out, nil
}

// MemoryPolicyNames lists the memory-tier policies the hit-ratio scenario
// can replay through tiered.Cache, for --help.
func MemoryPolicyNames() []string { return memoryPolicyNames() }

// SimPolicyNames lists the simulated peers' policies, for --help.
func SimPolicyNames() []string { return simPolicies() }
