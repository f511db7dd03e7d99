package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary act as a stampede worker: the stampede
// scenario re-executes os.Executable, which under go test is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(WorkerEnv) != "" {
		if err := Worker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
