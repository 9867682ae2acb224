//go:build !linux

package router

import (
	"context"
	"net"
)

// Listen announces on the TCP address addr for Serve: net.Listen.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// rawAccept is nil: Serve accepts through net.
func (s *Server) rawAccept(net.Listener) func() (net.Conn, error) { return nil }

// ownAccepted reports false: every socket is net's.
func ownAccepted(_ *Conn, nc net.Conn) (net.Conn, bool) { return nc, false }

// netConnOf returns nc: every socket is net's.
func netConnOf(nc net.Conn) net.Conn { return nc }

// remoteAddrString is nc's RemoteAddr().String().
func remoteAddrString(nc net.Conn) string { return nc.RemoteAddr().String() }
