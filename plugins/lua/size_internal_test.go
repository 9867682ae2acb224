package lua

import (
	"testing"
	"unsafe"
)

// TestConnHandleFitsItsSizeClass: every idle connection keeps its Lua
// handle (a luaConn with the userdata in it), laid out to fit the
// allocator's 80-byte size class; a field more costs each 16 bytes.
func TestConnHandleFitsItsSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(luaConn{}); size > 80 {
		t.Fatalf("luaConn is %d bytes, past the 80-byte size class", size)
	}
}
