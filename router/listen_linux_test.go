//go:build linux

package router_test

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/moonwire/moonwire/router"
)

// TestListenKeepAlive: a socket accepted from router.Listen has TCP
// keep-alive on with Go's default timings and TCP_NODELAY, though net set
// none of them on it.
func TestListenKeepAlive(t *testing.T) {
	ln, err := router.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The Listener defers the accept until the client has sent something.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	err = rc.Control(func(fd uintptr) {
		for _, w := range want {
			got, err := unix.GetsockoptInt(int(fd), w.level, w.opt)
			if err != nil || got != w.value {
				t.Errorf("%s = %d, %v; want %d", w.name, got, err, w.value)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
