// Package tcptest gives the router's low-level tests (the poller, the write
// queue) real loopback TCP connections. It knows nothing of WebSocket.
package tcptest

import (
	"net"
	"testing"
)

// Pair returns the two ends of a loopback TCP connection: dialed, the
// client's end, and accepted, the listener's. Both are closed when the
// test ends.
func Pair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	dc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		dc.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() {
		dc.Close()
		a.c.Close()
	})
	return dc.(*net.TCPConn), a.c.(*net.TCPConn)
}
