package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill cmd's process when kcmperf dies, by
// whatever signal: a peer left running would hold its port and a CPU. (The
// signal follows the thread that started the child; the Go runtime keeps
// its threads, so in practice that is the process.)
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
