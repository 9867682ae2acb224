package router

import (
	"testing"
	"unsafe"
)

// TestConnFitsItsSizeClass: an idle connection's cost is mostly its Conn,
// which is laid out to fit the allocator's 416-byte size class; a field
// that pushes it to the next class costs every idle connection 32 bytes.
func TestConnFitsItsSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(Conn{}); size > 416 {
		t.Fatalf("Conn is %d bytes, past the 416-byte size class", size)
	}
}
