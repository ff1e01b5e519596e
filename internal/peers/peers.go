// Package peers starts the real third-party servers that interop tests talk
// to (memcached, sockperf, ...), from their Debian packages, on loopback.
// A test whose peer is not installed is skipped with a message naming the
// package; .ci/install-peers installs them all.
package peers

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Start runs bin (from Debian package pkg) with the arguments args returns
// for a free loopback port, waits until it accepts TCP connections there,
// and returns the address. The process is killed by its pid when the test
// ends.
func Start(t testing.TB, bin, pkg string, args func(port int) []string) string {
	t.Helper()
	addr, _ := StartRestartable(t, bin, pkg, args)
	return addr
}

// StartRestartable is Start, and also returns restart, which kills the
// process, calls whileDown (if not nil), and starts it again on the same
// address, returning once it accepts connections: a peer that goes away
// and comes back.
func StartRestartable(t testing.TB, bin, pkg string, args func(port int) []string) (addr string, restart func(whileDown func())) {
	t.Helper()
	path := lookPath(t, bin, pkg)
	addr, port := freeAddr(t)
	stop := launch(t, exec.Command(path, args(port)...), addr)
	return addr, func(whileDown func()) {
		t.Helper()
		stop()
		if whileDown != nil {
			whileDown()
		}
		stop = launch(t, exec.Command(path, args(port)...), addr)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) (addr string, port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port
}

// lookPath finds bin, or skips the test naming its Debian package pkg.
func lookPath(t testing.TB, bin, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s); skipping the real-peer test", bin, pkg)
	}
	return path
}

// launch starts cmd and waits until it accepts connections on addr. The
// returned stop kills it by its pid and waits for it; the end of the test
// stops it too.
func launch(t testing.TB, cmd *exec.Cmd, addr string) (stop func()) {
	t.Helper()
	path := cmd.Path
	if cmd.Stderr == nil {
		cmd.Stderr = new(bytes.Buffer)
	}
	output, _ := cmd.Stderr.(fmt.Stringer) // what it said, for a failure
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return stop
		}
		select {
		case err := <-exited:
			t.Fatalf("%s exited: %v: %v", path, err, output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections on %s: %v", path, addr, err)
		}
		// Poll again after a short pause (not synchronisation: the only
		// signal a server gives that it is listening is accepting).
		time.Sleep(20 * time.Millisecond)
	}
}

// Memcached starts a real memcached and returns its address.
func Memcached(t testing.TB) string {
	t.Helper()
	addr, _ := MemcachedRestartable(t)
	return addr
}

// MemcachedRestartable starts a real memcached and returns its address
// and a function that restarts it there, empty (see StartRestartable).
func MemcachedRestartable(t testing.TB) (addr string, restart func(whileDown func())) {
	t.Helper()
	return StartRestartable(t, "memcached", "memcached", func(port int) []string {
		args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "2"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody")
		}
		return args
	})
}

// MemcachedRequest encodes a memcached binary protocol request (magic 0x80)
// with opcode op, the opaque the server echoes, key, extras and value.
func MemcachedRequest(op byte, opaque uint32, key, extras, value []byte) []byte {
	h := make([]byte, 24, 24+len(extras)+len(key)+len(value))
	h[0] = 0x80
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], opaque)
	return append(append(append(h, extras...), key...), value...)
}

// Nghttpd starts a real nghttpd serving docroot over cleartext HTTP/2 (h2c,
// prior knowledge) and returns its address.
func Nghttpd(t testing.TB, docroot string) string {
	t.Helper()
	return Start(t, "nghttpd", "nghttp2-server", func(port int) []string {
		return []string{"--no-tls", "-a", "127.0.0.1", "-d", docroot, strconv.Itoa(port)}
	})
}

// NghttpdTLS starts a real nghttpd serving docroot over HTTP/2 on TLS (h2
// by ALPN), with the PEM key and certificate files given, and returns its
// address.
func NghttpdTLS(t testing.TB, docroot, keyFile, certFile string) string {
	t.Helper()
	return Start(t, "nghttpd", "nghttp2-server", func(port int) []string {
		return []string{"-a", "127.0.0.1", "-d", docroot, strconv.Itoa(port), keyFile, certFile}
	})
}

// Run runs the client bin (from Debian package pkg) with args to its end,
// within a minute, and returns what it printed on stdout and stderr. A
// client that fails or times out fails the test with its output.
func Run(t testing.TB, bin, pkg string, args ...string) string {
	t.Helper()
	path := lookPath(t, bin, pkg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

// Interactive is a peer driven through its standard input, whose output a
// test waits on: openssl s_server, for one.
type Interactive struct {
	Addr  string
	stdin io.WriteCloser

	mu      sync.Mutex
	out     []byte
	changed chan struct{} // closed and replaced on every write to out
}

// Write collects the peer's output (stdout and stderr).
func (p *Interactive) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	close(p.changed)
	p.changed = make(chan struct{})
	return len(b), nil
}

// String returns what the peer has printed so far.
func (p *Interactive) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

// Input writes s to the peer's standard input.
func (p *Interactive) Input(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, s); err != nil {
		t.Fatalf("peer input: %v", err)
	}
}

// WaitOutput waits until the peer has printed want, at most 10 s; it
// fails the test if want does not come.
func (p *Interactive) WaitOutput(t testing.TB, want string) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		out, changed := string(p.out), p.changed
		p.mu.Unlock()
		if strings.Contains(out, want) {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("peer did not print %q; its output:\n%s", want, out)
		}
	}
}

// OpenSSLServer starts a real openssl s_server on TLS 1.3 with the PEM
// key and certificate files given. It serves one connection at a time,
// prints what it receives and the handshake messages it sends (">>>") and
// receives ("<<<"), sends what its Input is given, and takes its commands
// there ("K\n": a key update that asks the peer for one too).
func OpenSSLServer(t testing.TB, keyFile, certFile string) *Interactive {
	t.Helper()
	path := lookPath(t, "openssl", "openssl")
	// s_server prints some of its lines with C stdio, which holds them
	// back when stdout is a pipe.
	stdbuf := lookPath(t, "stdbuf", "coreutils")
	addr, port := freeAddr(t)
	p := &Interactive{Addr: addr, changed: make(chan struct{})}
	cmd := exec.Command(stdbuf, "-o0", path, "s_server", "-accept", "127.0.0.1:"+strconv.Itoa(port),
		"-key", keyFile, "-cert", certFile, "-tls1_3", "-msg")
	cmd.Stdout, cmd.Stderr = p, p
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	launch(t, cmd, addr)
	return p
}
