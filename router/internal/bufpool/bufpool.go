// Package bufpool recycles byte slices in power-of-two size classes so that
// read buffers, assembly buffers and frames can be borrowed for the life of
// one burst of traffic and returned when a connection goes idle.
//
// It knows nothing of WebSocket or the router; it is a leaf.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 9  // 512 B: the smallest class; tiny frames share it
	maxShift = 24 // 16 MiB: larger slices are allocated exactly and dropped
)

// Smallest is the capacity of the smallest class: every slice Get returns
// for up to this many bytes has exactly this capacity.
const Smallest = 1 << minShift

// pools[i] holds *[]byte with cap == 1<<(minShift+i). Pointers to slices are
// stored, not slices, so that Put does not allocate a fresh interface box.
var pools [maxShift - minShift + 1]sync.Pool

// class returns the pool index whose buffers hold at least n bytes, or -1
// when n is too large to pool.
func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	shift := bits.Len(uint(n - 1))
	if shift > maxShift {
		return -1
	}
	return shift - minShift
}

// Get returns a slice of length n whose capacity is n rounded up to the next
// size class. Its contents are undefined. The caller owns it until Put.
func Get(n int) []byte {
	c := class(n)
	if c < 0 {
		return make([]byte, n)
	}
	if p, _ := pools[c].Get().(*[]byte); p != nil {
		b := (*p)[:n]
		boxes.Put(p)
		return b
	}
	return make([]byte, n, 1<<(minShift+c))
}

// Put returns b to its size class. b must not be used afterwards. Slices
// whose capacity is not a class size (not from Get) are dropped.
func Put(b []byte) {
	c := cap(b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	p, _ := boxes.Get().(*[]byte)
	if p == nil {
		p = new([]byte)
	}
	*p = b[:0]
	pools[bits.Len(uint(c))-1-minShift].Put(p)
}

// boxes recycles the *[]byte holders themselves, which keeps Get/Put free of
// allocations in the steady state.
var boxes sync.Pool
