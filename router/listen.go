package router

import (
	"context"
	"net"
)

// Listen announces on the TCP address addr for Serve. It is net.Listen
// with one difference that shows under connection churn: TCP keep-alive
// (Go's defaults: probes after 15 s idle, every 15 s, 9 of them) is set
// once on the listening socket where the platform copies it to every
// accepted socket (Linux does), instead of with four setsockopt calls per
// accepted connection. Elsewhere it is plain net.Listen.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := listenConfig()
	// net's error already reads "listen tcp ADDR: ...".
	return lc.Listen(ctx, "tcp", addr)
}
