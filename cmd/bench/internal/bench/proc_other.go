//go:build !linux

package bench

import "os/exec"

// setParentDeath does nothing here: a worker still exits when its stdin
// (the parent's pipe) closes.
func setParentDeath(*exec.Cmd) {}
