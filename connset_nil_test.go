package kcm_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A Dial that returns a nil connection of a concrete type (here a nil
// *tls.Conn, whose Close would dereference it) is a failed dial, reported
// and retried like an untyped nil, not a panic in the set's goroutine.
func TestConnSetTypedNilConnection(t *testing.T) {
	m := newMux(t, kcm.Config{})
	reported := make(chan error, 1)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Dial:       func(context.Context) (net.Conn, error) { return (*tls.Conn)(nil), nil },
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		OnDialError: func(err error) {
			select {
			case reported <- err:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if err := waitErr(t, reported, "the dial error"); !errors.Is(err, kcm.ErrBadConn) {
		t.Fatalf("reported %v, want ErrBadConn", err)
	}
}
