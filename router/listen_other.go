//go:build !linux

package router

import "net"

// listenConfig is net's default: keep-alive set on each accepted socket.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
