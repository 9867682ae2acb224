//go:build linux

package main

import "math/bits"

// hist is a log-linear latency histogram of nanosecond values: exact below
// 256 ns, then 128 buckets per power of two (a relative error under 0.8%).
// It is a fixed array: recording never allocates, and each worker keeps its
// own and merges it at the end.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

const (
	histSubBits = 8
	histSub     = 1 << histSubBits // 256: values below are exact
	histHalf    = histSub / 2      // buckets per power of two above
	histBuckets = histSub + (64-histSubBits)*histHalf
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits // >= 1
	m := v >> uint(shift)                // in [histHalf, histSub)
	return histSub + (shift-1)*histHalf + int(m-histHalf)
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	i -= histSub
	shift := i/histHalf + 1
	m := uint64(i%histHalf + histHalf)
	lo = m << uint(shift)
	hi = lo + (1 << uint(shift)) - 1
	return lo, hi
}

// add records one value (negative values count as 0).
func (h *hist) add(v int64) {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	h.counts[histIndex(u)]++
	if h.n == 0 || u < h.min {
		h.min = u
	}
	if u > h.max {
		h.max = u
	}
	h.n++
	h.sum += u
}

// merge adds o's records to h.
func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at quantile q (0..1): the midpoint of the
// bucket holding the ceil(q*n)-th smallest value, clamped to [min, max].
func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			return max(h.min, min(v, h.max))
		}
	}
	return h.max
}

func (h *hist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}
