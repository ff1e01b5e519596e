package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clientEnv makes the test binary run as a kcmperf client (see TestMain).
const clientEnv = "KCMPERF_TEST_CLIENT"

// TestInterruptEndsRun: SIGINT in the middle of a run ends the client, with
// exit status 130, the way an error does: its child server is stopped and
// reaped, and the plot file created before measuring is removed.
func TestInterruptEndsRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("finds the child server in /proc")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	plot := filepath.Join(t.TempDir(), "x.png")
	cmd := exec.Command(exe, "-t", "rr", "-l", "10s", "-w", "10ms", "-reps", "1", "-plot", plot)
	cmd.Env = append(os.Environ(), clientEnv+"=1")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	// The client starts its server after creating the plot file.
	srv := 0
	for deadline := time.Now().Add(30 * time.Second); srv == 0; srv = childOf(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("no child server appeared; stderr: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
		exited <- err // for the deferred Kill
	case <-time.After(60 * time.Second):
		t.Fatal("the client went on after SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("exit %d (%v), stderr %q; want 130 and \"interrupted\"", code, err, errb.String())
	}
	if _, err := os.Stat(plot); !os.IsNotExist(err) {
		t.Errorf("interrupted run left %s behind (%v)", plot, err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(srv)); !os.IsNotExist(err) {
		t.Errorf("child server %d outlived the client, or was not reaped (%v)", srv, err)
	}
}

// childOf returns the pid of a child process of pid, or 0.
func childOf(pid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			return n
		}
	}
	return 0
}
