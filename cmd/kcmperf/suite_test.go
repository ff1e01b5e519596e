package main

import (
	"os"
	"testing"
)

// TestPairOrderAlternates checks that each side runs first in every other
// pair, so the second run's advantage is not credited to one side.
func TestPairOrderAlternates(t *testing.T) {
	first := map[string]int{}
	for rep := range 6 {
		o := pairOrder(rep)
		if o[0] == o[1] {
			t.Fatalf("rep %d runs side %d twice", rep, o[0])
		}
		first[sides[o[0]]]++
	}
	if first["raw"] != 3 || first["kcm"] != 3 {
		t.Errorf("first runs over 6 pairs: %v, want 3 each", first)
	}
}

// The suite primes each side it measures with one unmeasured run before
// the first pair: the first run in fresh processes is faster than later
// ones, whichever side it is.
func TestSuitePrimesEachSide(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		only string
		want int64 // runs the server saw: primes, then reps of each side
	}{{"", 2 + 2}, {"kcm", 1 + 1}} {
		args := []string{"-t", "rr", "-H", s.Addr(), "-l", "60ms", "-w", "10ms", "-reps", "1"}
		if c.only != "" {
			args = append(args, "-only", c.only)
		}
		o, err := parseFlags(args, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		tg, err := dialTarget(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		before := s.starts.Load()
		rows, err := runSuite(tg, o, nil)
		tg.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.starts.Load() - before; got != c.want || len(rows) != 1 {
			t.Errorf("-only %q: %d runs and %d rows, want %d runs and 1 row", c.only, got, len(rows), c.want)
		}
	}
}
