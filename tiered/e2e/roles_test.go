package e2e

import "fmt"

func runRole(role string) error { return fmt.Errorf("unknown role %q", role) }
