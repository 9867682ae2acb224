package router_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// lingerServer serves /echo with a linger timeout far beyond the test's
// (a lingering socket ends only when the server closes), tuned by tune
// before it serves.
func lingerServer(t *testing.T, cfg router.Config, tune func(*router.Server)) (*router.Server, string) {
	t.Helper()
	cfg.Routes = []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}, Lanes: 1}}
	srv, err := router.New(cfg)
	must(t, err)
	router.SetLingerTimeout(srv, time.Hour)
	if tune != nil {
		tune(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String()
}

// violate dials /echo (retrying while the server is full), sends an
// unmasked frame and waits for the server's 1002 and hang-up, keeping its
// own side of the socket open.
func violate(t *testing.T, addr string) *moontest.Client {
	t.Helper()
	var c *moontest.Client
	moontest.WaitFor(t, "a place under max_connections", func() bool {
		var err error
		c, err = moontest.TryDial(t, "ws://"+addr+"/echo")
		return err == nil
	})
	must(t, c.WriteRaw([]byte{0x81, 0x01, 'x'})) // unmasked
	f := c.Next()
	if code, _ := f.CloseCode(); f.Op != ws.OpClose || code != router.CloseProtocolError {
		t.Fatalf("got %v %q, want close 1002", f.Op, f.Payload)
	}
	c.ExpectEOF()
	return c
}

// TestLingeringSocketsAreCapped: sockets lingering after a protocol
// violation are capped (at max(64, max_connections)); past the cap they
// close at once. They were not counted anywhere: with max_connections =
// 2, every client that broke the protocol and kept its socket open held a
// descriptor and a goroutine on the server.
func TestLingeringSocketsAreCapped(t *testing.T) {
	t.Parallel()
	srv, addr := lingerServer(t, router.Config{MaxConnections: 2}, nil)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	limit := router.LingerCap(srv)
	if limit != 64 {
		t.Fatalf("linger cap with max_connections = 2: %d, want 64", limit)
	}
	for range limit + 16 {
		c := violate(t, addr)
		defer c.Conn.Close()
	}
	// Once no connection is left, every failed one has been handed to
	// linger (or closed).
	moontest.WaitFor(t, "the failed connections to end", func() bool { return srv.Stats().Connections == 0 })
	if n := router.Lingering(srv); n != limit {
		t.Fatalf("%d sockets lingering, want the cap, %d", n, limit)
	}
}

// TestShutdownEndsALingerAtOnce: a shutdown that begins just as a socket
// starts lingering ends that linger at once. The draining goroutine used
// to set its 2 s deadline after the socket was registered, over the
// shutdown's "now": Shutdown waited it out, and past AbandonGrace
// reported a false ErrAbandoned.
func TestShutdownEndsALingerAtOnce(t *testing.T) {
	t.Parallel()
	var once sync.Once
	shut := make(chan struct{})
	srv, addr := lingerServer(t, router.Config{}, func(s *router.Server) {
		router.SetLingeringHook(s, func() {
			once.Do(func() {
				router.BeginClosing(s)
				close(shut)
			})
		})
	})
	c := violate(t, addr)
	defer c.Conn.Close()
	select {
	case <-shut:
	case <-time.After(moontest.Timeout):
		t.Fatal("the socket never lingered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
