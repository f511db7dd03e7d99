package e2e

import "fmt"

// runRole plays role in a re-executed test binary (see TestMain).
func runRole(role string) error {
	rio := newRoleIO()
	switch role {
	case "reactor":
		return runReactor(rio)
	case "thermos":
		return runThermos(rio, false)
	case "direct":
		return runThermos(rio, true)
	case "plain":
		return runPlain(rio)
	case "soak":
		return runSoak(rio)
	}
	return fmt.Errorf("unknown role %q", role)
}
