package router_test

import (
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// flooder answers "flood" with floodCount numbered messages of 16 KiB,
// more than the kernel's socket buffers hold, and hands out the Conn.
type flooder struct {
	goEcho
	conns chan *router.Conn
}

const floodCount = 600

func (f *flooder) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	if string(d) != "flood" {
		_ = c.Send(k, d)
		return
	}
	f.conns <- c
	msg := make([]byte, 16<<10)
	for i := range floodCount {
		binary.BigEndian.PutUint32(msg, uint32(i))
		_ = c.Send(router.Binary, msg)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func startFlooder(t *testing.T, writeTimeout time.Duration) (*flooder, *router.Server, *moontest.Client, int) {
	t.Helper()
	f := &flooder{conns: make(chan *router.Conn, 1)}
	srv, addr := serve(t, router.Config{
		Routes:       []router.RouteSpec{{Pattern: "/f", Handler: f}},
		WriteQueue:   floodCount * (16<<10 + 16),
		WriteTimeout: writeTimeout,
	})
	t.Cleanup(func() { _ = srv.Close() })
	before := openFDs(t)
	c := moontest.Dial(t, "ws://"+addr+"/f")
	_ = c.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.Send("flood")
	return f, srv, c, before
}

func waitFlushing(t *testing.T, f *flooder) {
	t.Helper()
	var sc *router.Conn
	select {
	case sc = <-f.conns:
	case <-time.After(moontest.Timeout):
		t.Fatal("the handler never saw the request")
	}
	if !router.OwnsSocket(sc) {
		t.Fatal("the socket is still net's")
	}
	moontest.WaitFor(t, "the flush to wait for the full socket", func() bool { return router.FlushWaiting(sc) })
}

// TestBlockedFlushOnOwnedSocket: a reader that does not keep up fills its
// socket; the flush then waits on a net.Conn borrowed from the router's
// descriptor, and once the reader reads, everything arrives, in order.
// Closing gives back every descriptor, the borrowed one included.
func TestBlockedFlushOnOwnedSocket(t *testing.T) {
	f, srv, c, before := startFlooder(t, 10*time.Second)
	waitFlushing(t, f)
	for i := range floodCount {
		fr := c.Next()
		if fr.Op != ws.OpBinary || len(fr.Payload) != 16<<10 || binary.BigEndian.Uint32(fr.Payload) != uint32(i) {
			t.Fatalf("message %d: op %v, %d bytes, number %d", i, fr.Op, len(fr.Payload), binary.BigEndian.Uint32(fr.Payload))
		}
	}
	c.Send("after")
	c.Expect("after")
	c.Close(1000)
	_ = c.Conn.Close()
	moontest.WaitFor(t, "the connection to end", func() bool { return srv.Stats().Connections == 0 })
	moontest.WaitFor(t, "every descriptor closed", func() bool { return openFDs(t) <= before })
}

// TestBlockedFlushTimesOutOnOwnedSocket: a reader that never reads is
// dropped after the write timeout, and the borrowed descriptor with it.
func TestBlockedFlushTimesOutOnOwnedSocket(t *testing.T) {
	f, srv, c, before := startFlooder(t, 300*time.Millisecond)
	waitFlushing(t, f)
	moontest.WaitFor(t, "the write timeout to drop the connection", func() bool { return srv.Stats().Connections == 0 })
	_ = c.Conn.Close()
	moontest.WaitFor(t, "every descriptor closed", func() bool { return openFDs(t) <= before })
}
