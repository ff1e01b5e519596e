package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// target is the server a client run talks to: its data address and a
// control connection that reports the server's CPU time per measured interval.
type target struct {
	addr string
	ctrl *controlClient
	tls  bool // data connections use TLS: the configuration being run says so
	// interrupted, when closed, ends the run being measured with
	// errInterrupted (nil: never).
	interrupted <-chan struct{}
}

func dialTarget(addr string) (*target, error) {
	ctrl, err := dialControl(addr)
	if err != nil {
		return nil, err
	}
	return &target{addr: addr, ctrl: ctrl}, nil
}

func (t *target) Close() error { return t.ctrl.Close() }

// dial opens a data connection to the server and says what it is for.
func (t *target) dial(kind byte, size int) (net.Conn, error) {
	return t.dialHello(hello{kind: kind, size: size})
}

func (t *target) dialHello(h hello) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", t.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if t.tls {
		tc, err := clientTLS(c, 5*time.Second)
		if err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write(h.marshal()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// controlTimeout bounds every exchange on the control connection, so a
// server that hangs, or a peer that is not a kcmperf server at all, ends
// the run with an error instead of blocking it.
const controlTimeout = 10 * time.Second

// controlClient is the client's end of the control connection.
type controlClient struct {
	c         net.Conn
	br        *bufio.Reader
	heartbeat bool // the server keeps a heartbeat timer (see startHeartbeat)
	timeout   time.Duration
}

// dialControl opens the control connection and checks the server's
// greeting: its protocol version and whether it runs the heartbeat.
func dialControl(addr string) (*controlClient, error) {
	return dialControlTimeout(addr, controlTimeout)
}

// dialControlTimeout is dialControl with timeout bounding each exchange.
func dialControlTimeout(addr string, timeout time.Duration) (*controlClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	cc := &controlClient{c: c, br: bufio.NewReader(c), timeout: timeout}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(hello{kind: kindControl}.marshal()); err != nil {
		c.Close()
		return nil, err
	}
	line, err := readGreeting(cc.br)
	if err != nil && !errors.Is(err, errNotGreeting) {
		c.Close()
		return nil, fmt.Errorf("%s is not answering as a kcmperf server: %w", addr, err)
	}
	hb, ok := parseGreeting(line)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s is not a kcmperf server of this version (it said %q)", addr, strings.TrimSpace(line))
	}
	cc.heartbeat = hb
	return cc, nil
}

// errNotGreeting: what the peer sent cannot start a greeting.
var errNotGreeting = errors.New("not a greeting")

// readGreeting reads the greeting line, and stops with errNotGreeting as
// soon as what arrived cannot start "kcmperf-control/": a peer that
// speaks another protocol (an echo server sends the hello back) is told
// apart at once, not at the control timeout.
func readGreeting(br *bufio.Reader) (string, error) {
	name := controlVersion[:strings.LastIndexByte(controlVersion, '/')+1]
	var b []byte
	for {
		c, err := br.ReadByte()
		if err != nil {
			return string(b), err
		}
		b = append(b, c)
		if c == '\n' {
			return string(b), nil
		}
		if len(b) <= len(name) && name[len(b)-1] != c {
			// Show what else has arrived, up to a line's end.
			rest, _ := br.Peek(min(br.Buffered(), 64))
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				rest = rest[:i]
			}
			return string(b) + string(rest), errNotGreeting
		}
	}
}

// greeting is the server's first line on a control connection.
func greeting(heartbeat bool) string {
	return fmt.Sprintf("%s heartbeat=%t", controlVersion, heartbeat)
}

// parseGreeting reads a greeting line; ok is false for anything else.
func parseGreeting(line string) (heartbeat, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), controlVersion+" heartbeat=")
	if !ok {
		return false, false
	}
	hb, err := strconv.ParseBool(rest)
	return hb, err == nil
}

// controlVersion names the control protocol; client and server must agree.
const controlVersion = "kcmperf-control/1"

func (cc *controlClient) Close() error { return cc.c.Close() }

// do sends one command and returns the server's reply line.
func (cc *controlClient) do(cmd string) (string, error) {
	cc.c.SetDeadline(time.Now().Add(cc.timeout))
	if _, err := io.WriteString(cc.c, cmd+"\n"); err != nil {
		return "", fmt.Errorf("kcmperf server: %s: %w", cmd, err)
	}
	line, err := cc.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("kcmperf server: %s: %w", cmd, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "error") {
		return "", errors.New("kcmperf server: " + line)
	}
	return line, nil
}

// stop returns the server's CPU time since the last start.
func (cc *controlClient) stop() (time.Duration, error) {
	line, err := cc.do("stop")
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimPrefix(line, "cpu "), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kcmperf server: bad stop reply %q", line)
	}
	return time.Duration(ns), nil
}

// child is a "kcmperf server" in a child process: the default, so that client
// and server each have their own Go runtime, scheduler and GC, as two
// programs talking over loopback would.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

// childEnv marks a child process; tests use it to turn the test binary into
// a server.
const childEnv = "KCMPERF_CHILD"

func startChild(cpuprofile string, heartbeat bool) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"server", "-listen", "127.0.0.1:0", "-stdin-exit"}
	if cpuprofile != "" {
		args = append(args, "-cpuprofile", cpuprofile)
	}
	args = append(args, "-heartbeat="+strconv.FormatBool(heartbeat))
	cmd := exec.Command(exe, args...)
	dieWithParent(cmd)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &child{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), listeningPrefix)
	if err != nil || !ok {
		ch.Close()
		return nil, fmt.Errorf("kcmperf: child server did not start (%q, %v)", line, err)
	}
	ch.addr = addr
	return ch, nil
}

// Close ends the child by closing its stdin (it exits on EOF, which also
// happens if this process dies) and waits for it.
func (ch *child) Close() error {
	ch.stdin.Close()
	return ch.cmd.Wait()
}
