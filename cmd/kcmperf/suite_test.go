package main

import "testing"

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
