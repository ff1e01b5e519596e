package main

import (
	"bytes"
	"testing"
)

func TestHelloRoundTrip(t *testing.T) {
	h := hello{kind: kindKCMStream, batch: 128, size: 4096}
	got, err := readHello(bytes.NewReader(h.marshal()))
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, h)
	}
	got, err = readHello(bytes.NewReader(hello{kind: kindKCMStream, size: 60}.marshal()))
	if err != nil || got.batch != 1024 {
		t.Errorf("zero batch reads as %d, %v; want 1024, the messages of 64 bytes in 64 KiB", got.batch, err)
	}
	bad := h.marshal()
	bad[0] = 'x'
	if _, err := readHello(bytes.NewReader(bad)); err == nil {
		t.Error("bad magic accepted")
	}
	if _, err := readHello(bytes.NewReader(hello{kind: kindRawEcho, size: maxMessageSize}.marshal())); err == nil {
		t.Error("oversized message accepted")
	}
}

func TestLengthPrefixFraming(t *testing.T) {
	msg := newMessage(10, 'x')
	if len(msg) != 14 || msg[3] != 10 || msg[13] != 'x' {
		t.Fatalf("newMessage: % x", msg)
	}
	for n := range hdrLen {
		if got, err := lengthPrefix.Parse(msg[:n]); got != 0 || err != nil {
			t.Errorf("%d bytes: %d, %v; want 0, nil", n, got, err)
		}
	}
	if got, err := lengthPrefix.Parse(msg[:hdrLen]); got != 14 || err != nil {
		t.Errorf("header only: %d, %v; want 14", got, err)
	}
	if _, err := lengthPrefix.Parse([]byte{0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Error("4 GiB message accepted")
	}
}
