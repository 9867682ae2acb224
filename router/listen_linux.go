//go:build linux

package router

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// keepAlive is Go's default TCP keep-alive (net.KeepAliveConfig's zero
// values), set on the listener instead of on each accepted socket.
var keepAlive = [...]struct{ level, opt, value int }{
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
}

func listenConfig() net.ListenConfig {
	return net.ListenConfig{
		// Accepted sockets inherit the listener's options on Linux, so
		// net need not set them again on every Accept.
		KeepAlive: -1,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				for _, o := range keepAlive {
					if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.value); serr != nil {
						return
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}
