package kcm_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

func TestConformanceProbeDontWaitAfterExchange(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	err := cfDo(t, 2*time.Second, "RecvMsg(DontWait)", func() error {
		_, _, err := s.RecvMsg(make([]byte, 100), kcm.DontWait)
		return err
	})
	if !errors.Is(err, kcm.ErrWouldBlock) {
		t.Fatalf("err = %v", err)
	}
}

func TestConformanceProbeDeadlineAfterExchange(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	err := cfDo(t, 2*time.Second, "Recv with deadline", func() error {
		_, err := s.Recv(make([]byte, 100))
		return err
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}
