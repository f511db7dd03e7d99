package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

var (
	flagLong = flag.Bool("history.long", false, "run the long history check (>= 10 min, a fault every 20 s, >= 4 processes); also THERMOS_E2E_LONG=1")
	flagRun  = flag.Duration("history.run", 0, "override the history check's run length (and space faults evenly, 5 of them), e.g. for a quick look")
	flagOut  = flag.String("history.out", "", "directory for porcupine's HTML visualizations of violating keys (default: the test's temporary directory)")
)

// roleEnv selects, in a re-executed test binary, the role the process plays
// (see runRole); the parent sets it, nothing else does.
const roleEnv = "THERMOS_E2E_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintf(os.Stderr, "e2e role %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
