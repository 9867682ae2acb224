//go:build linux

package main

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestHistPercentiles(t *testing.T) {
	t.Parallel()
	var h hist
	// 1..100000 µs, shuffled: quantile q is q*100000 µs.
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = int64(i+1) * 1000
	}
	rand.Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	for _, v := range vals {
		h.add(v)
	}
	for _, tc := range []struct {
		q    float64
		want float64
	}{
		{q: 0.5, want: 50_000_000},
		{q: 0.9, want: 90_000_000},
		{q: 0.99, want: 99_000_000},
		{q: 0.999, want: 99_900_000},
		{q: 1, want: 100_000_000},
	} {
		got := float64(h.quantile(tc.q))
		if math.Abs(got-tc.want)/tc.want > 0.01 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", tc.q, got, tc.want)
		}
	}
	if h.min != 1000 || h.max != 100_000_000 || h.n != 100000 {
		t.Errorf("min %d max %d n %d", h.min, h.max, h.n)
	}
	if m := h.mean(); math.Abs(m-50_000_500) > 1 {
		t.Errorf("mean %v", m)
	}
}

func TestHistSmallExactAndMerge(t *testing.T) {
	t.Parallel()
	var a, b hist
	for v := int64(0); v < 100; v++ {
		a.add(v)
	}
	for v := int64(100); v < 200; v++ {
		b.add(v)
	}
	a.merge(&b)
	if got := a.quantile(0.5); got != 99 {
		t.Errorf("p50 = %d, want 99 (exact below 256)", got)
	}
	if got := a.quantile(0.99); got != 197 {
		t.Errorf("p99 = %d, want 197", got)
	}
	var empty hist
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Error("empty histogram should report 0")
	}
	a.add(-5) // clamps to 0
	if a.min != 0 {
		t.Errorf("min %d", a.min)
	}
}

func TestHistBuckets(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		v := r.Uint64() >> (r.IntN(64))
		idx := histIndex(v)
		if idx < 0 || idx >= histBuckets {
			t.Fatalf("index %d of %d out of range", idx, v)
		}
		lo, hi := histBounds(idx)
		if v < lo || v > hi {
			t.Fatalf("%d not in bucket %d [%d, %d]", v, idx, lo, hi)
		}
		if v >= histSub && float64(hi-lo)/float64(lo) > 1.0/histHalf {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", idx, lo, hi, histHalf)
		}
	}
	if idx := histIndex(math.MaxUint64); idx != histBuckets-1 {
		t.Errorf("max value in bucket %d, want %d", idx, histBuckets-1)
	}
}
