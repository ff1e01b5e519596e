package kcm

import "testing"

// A queue that drained after a burst of many messages lets go of its ring,
// and keeps a small one, which steady traffic reuses without allocating.
func TestQueueRingShrinksWhenDrained(t *testing.T) {
	var q msgQueue
	for range 3 * maxIdleRing {
		q.push(Message{b: []byte{1}})
	}
	for q.len() > 0 {
		q.pop()
	}
	if q.q != nil || q.bytes != 0 {
		t.Fatalf("drained queue keeps a ring of %d entries, %d bytes", len(q.q), q.bytes)
	}
	for range 10 {
		q.push(Message{b: []byte{1}})
	}
	for q.len() > 0 {
		q.pop()
	}
	small := len(q.q)
	if small == 0 {
		t.Fatal("a small drained queue let go of its ring")
	}
	b := []byte{1}
	if a := testing.AllocsPerRun(100, func() {
		q.push(Message{b: b})
		q.pop()
	}); a != 0 {
		t.Fatalf("steady push and pop allocate %v times", a)
	}
}
