package bench

import (
	"os/exec"
	"syscall"
)

// setParentDeath has the kernel kill cmd when this process dies, so a
// worker never outlives a parent killed without cleaning up.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
