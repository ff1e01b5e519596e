package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "server" {
		os.Exit(serverMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(clientMain(os.Args[1:], os.Stdout, os.Stderr))
}

// listeningPrefix starts the one line a server prints on stdout; a parent
// reads its address from it.
const listeningPrefix = "kcmperf server listening on "

// serverMain is "kcmperf server": it serves until interrupted, told to quit
// on a control connection, or (with -stdin-exit, as a child) until its stdin
// closes, which also ends it when the parent dies.
func serverMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kcmperf server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":"+defaultPort, "address to listen on")
	stdinExit := fs.Bool("stdin-exit", false, "exit when stdin reaches EOF (used when run as a child)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole server run to this file")
	heartbeat := fs.Bool("heartbeat", true, "keep a timer pending, as the client does by default (see the client's -heartbeat); the client reports this setting")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kcmperf server: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *heartbeat {
		defer startHeartbeat()()
	}
	if *cpuprofile != "" {
		stop, err := startProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "kcmperf server:", err)
			return 1
		}
		defer stop()
	}
	s, err := startServer(*listen, *heartbeat)
	if err != nil {
		fmt.Fprintln(stderr, "kcmperf server:", err)
		return 1
	}
	defer s.Close()
	fmt.Fprintln(stdout, listeningPrefix+s.Addr())

	done := make(chan struct{})
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if *stdinExit {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			close(done)
		}()
		// A child: Ctrl-C on a terminal reaches it with its parent, which
		// ends the run in progress and then closes this stdin. Dying first
		// would fail that run with a lost connection instead.
		signal.Ignore(os.Interrupt)
		sigs = sigs[1:]
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, sigs...)
	defer signal.Stop(sig)
	select {
	case <-done:
	case <-sig:
	case <-s.Quit():
	}
	return 0
}

func clientMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kcmperf:", err)
		return 2
	}
	if err := runClient(o, args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "kcmperf:", err)
		if errors.Is(err, errInterrupted) {
			return 130 // as a shell reports a command that SIGINT ended
		}
		return 1
	}
	return 0
}

// notifyInterrupt returns a channel closed when SIGINT or SIGTERM arrives,
// and a function that stops listening. The run being measured then ends
// as on an error: the child server is stopped and waited for, and the plot
// file removed. A second signal acts as it would without this.
func notifyInterrupt() (interrupted <-chan struct{}, stop func()) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // the first signal, or the caller's stop: listen no more
	}()
	return ctx.Done(), stop
}

func runClient(o *options, args []string, stdout, stderr io.Writer) (err error) {
	if o.cpuprofile != "" {
		stop, err := startProfile(o.cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if o.heartbeat {
		defer startHeartbeat()()
	}
	if o.peer == "sockperf" {
		return runSockperf(o, stdout, stderr)
	}
	// Installed before the plot file is created, so that an interrupt
	// never finds it to leave behind empty.
	interrupted, stopNotify := notifyInterrupt()
	defer stopNotify()
	var plotFile *os.File
	if o.plot != "" {
		// Fail before measuring, not half a minute later.
		if plotFile, err = os.Create(o.plot); err != nil {
			return fmt.Errorf("-plot: %w", err)
		}
		defer func() {
			if cerr := plotFile.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(o.plot)
			}
		}()
	}

	rep := &Report{
		Command:   strings.Join(append([]string{"kcmperf"}, args...), " "),
		GoVersion: runtime.Version(),
		CPU:       cpuModel(),
		NumCPU:    runtime.NumCPU(),
		Reps:      o.reps,
		Duration:  o.duration,
		Warmup:    o.warmup,
	}
	addr := o.host
	rep.Server = addr
	if addr == "" {
		ch, err := startChild(o.srvprofile, o.heartbeat)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := ch.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("child server: %w", cerr)
			}
		}()
		addr, rep.Server = ch.addr, "child process on "+ch.addr
	}
	t, err := dialTarget(addr)
	if err != nil {
		return err
	}
	defer t.Close()
	t.interrupted = interrupted
	rep.Heartbeat, rep.ServerHeartbeat = o.heartbeat, t.ctrl.heartbeat
	if o.heartbeat != t.ctrl.heartbeat {
		fmt.Fprintf(stderr, "kcmperf: warning: heartbeat is %t here but %t on the server; the ratios mix two runtime modes (see -heartbeat)\n", o.heartbeat, t.ctrl.heartbeat)
	}

	var prog *progress
	if f, ok := stdout.(*os.File); ok && !o.json {
		prog = newProgress(f, true)
		if prog.enabled {
			fmt.Fprintf(f, "kcmperf: about %v of measurement\n", o.estimate().Round(1e9))
		}
	}
	rep.Rows, err = runSuite(t, o, prog)
	if err != nil {
		return err
	}
	if o.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		return err
	}
	if plotFile != nil {
		format, _ := plotFormat(o.plot) // checked by parseFlags
		if err := drawPlot(plotFile, format, rep.Rows); err != nil {
			return err
		}
		if !o.json {
			fmt.Fprintln(stdout, "plot written to", o.plot)
		}
	}
	return nil
}

func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// cpuModel is the machine's CPU model name, for the report.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
