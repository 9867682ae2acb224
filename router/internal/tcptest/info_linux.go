package tcptest

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Info returns the kernel's TCP_INFO for c's socket: what it has sent,
// holds unsent and received, segment by segment.
func Info(t testing.TB, c syscall.Conn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info
}
