package kcm

import (
	"slices"
	"testing"
)

// Mux.Sockets, Mux.Psocks and the /proc dump sort the mux's lists by index
// (under the mux's lock for the dump); after churn those lists are far
// from index order, and an insertion sort made a scrape of 16000 sockets
// quadratic. Counted in comparisons, not timed.
func TestSortByIndexIsNotQuadratic(t *testing.T) {
	const n = 16000
	xs := make([]int, n)
	for i := range xs {
		xs[i] = (i + n/2) % n // the later half first, as after churn
	}
	calls := 0
	sortByIndex(xs, func(x int) int { calls++; return x })
	if !slices.IsSorted(xs) {
		t.Fatal("not sorted")
	}
	if limit := 2 * 4 * n * 14; calls > limit { // 2 idx calls a comparison, n log2 n comparisons and some
		t.Fatalf("%d index lookups to sort %d items, want at most %d", calls, n, limit)
	}
}

// indexSet hands out the lowest free index, like the kernel, also after
// frees below its hint.
func TestIndexSetLowestFree(t *testing.T) {
	var x indexSet
	for i := range 5 {
		if got := x.alloc(); got != i {
			t.Fatalf("alloc %d = %d", i, got)
		}
	}
	x.free(3)
	x.free(1)
	for _, want := range []int{1, 3, 5, 6} {
		if got := x.alloc(); got != want {
			t.Fatalf("alloc = %d, want %d", got, want)
		}
	}
	x.free(0)
	x.free(9) // never handed out: ignored
	x.free(-1)
	if got := x.alloc(); got != 0 {
		t.Fatalf("alloc = %d, want 0", got)
	}
	if got := x.alloc(); got != 7 {
		t.Fatalf("alloc = %d, want 7", got)
	}
}
