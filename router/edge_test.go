package router_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// The poller is edge-triggered: it reports data once, when it arrives.
// These tests give the router the cases where no later report comes and
// the read turn's holder must read again on its own.

// blocker echoes, holding its lane inside Message on "block..." until
// release is closed. "...quietly" gets no answer: a write to a peer that
// hung up would end the connection by itself.
type blocker struct {
	goEcho
	entered  chan *router.Conn
	release  chan struct{}
	messages atomic.Int64
}

// startBlocker serves a blocker on /b, on one lane, and connects to it.
func startBlocker(t *testing.T) (*blocker, *router.Server, *moontest.Client) {
	t.Helper()
	b := &blocker{entered: make(chan *router.Conn, 1), release: make(chan struct{})}
	srv, addr := serve(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/b", Handler: b, Lanes: 1}}})
	t.Cleanup(func() { _ = srv.Close() })
	return b, srv, moontest.Dial(t, "ws://"+addr+"/b")
}

func (b *blocker) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	b.messages.Add(1)
	if bytes.HasPrefix(d, []byte("block")) {
		b.entered <- c
		<-b.release
	}
	if !bytes.HasSuffix(d, []byte("quietly")) {
		_ = c.Send(k, d)
	}
}

func (b *blocker) blocked(t *testing.T) *router.Conn {
	t.Helper()
	select {
	case c := <-b.entered:
		return c
	case <-time.After(moontest.Timeout):
		t.Fatal("the handler never saw the message")
		return nil
	}
}

// TestReadsWhatCameWhileHandling: a message that arrives while the
// connection's previous one is in its handler (the read turn held) is
// read once the handler returns, though the client sends nothing more.
func TestReadsWhatCameWhileHandling(t *testing.T) {
	t.Parallel()
	b, _, c := startBlocker(t)
	c.Send("block")
	sc := b.blocked(t)
	c.Send("after")
	moontest.WaitFor(t, "the report of the second message", func() bool { return router.ReadReported(sc) })
	close(b.release)
	c.Expect("block")
	c.Expect("after")
}

// TestHangupBehindData: a client that sends a message and hangs up while
// the previous one is in its handler. Reading the message does not
// consume the end of the stream behind it, and no later report comes:
// the server must still see the hangup and end the connection.
func TestHangupBehindData(t *testing.T) {
	t.Parallel()
	b, srv, c := startBlocker(t)
	c.Send("block quietly")
	sc := b.blocked(t)
	c.Send("last quietly")
	c.Conn.Close()
	moontest.WaitFor(t, "the reports of the message and the hangup", func() bool { return router.ReadHungUp(sc) })
	close(b.release)
	moontest.WaitFor(t, "the connection to end", func() bool { return srv.Stats().Connections == 0 })
	if n := b.messages.Load(); n != 2 {
		t.Fatalf("handler saw %d messages, want 2", n)
	}
}

// TestHangupRightAfterData: data and the end of the stream arrive
// together, the case where one read returns the data and only the next
// one sees the end. Every such connection must end.
func TestHangupRightAfterData(t *testing.T) {
	t.Parallel()
	srv, addr := serve(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/e", Handler: goEcho{}}}})
	t.Cleanup(func() { _ = srv.Close() })
	var frame bytes.Buffer
	// Half a frame: the server waits for the rest, and must notice that
	// none will come. (Nothing it answers: a write to the closed peer
	// would end the connection by itself.)
	_ = ws.WriteHeader(&frame, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Length: 100})
	frame.WriteString("partial")
	for range 50 {
		c := moontest.Dial(t, "ws://"+addr+"/e")
		if err := c.WriteRaw(frame.Bytes()); err != nil {
			t.Fatal(err)
		}
		c.Conn.Close()
	}
	moontest.WaitFor(t, "every connection to end", func() bool { return srv.Stats().Connections == 0 })
}

// TestReadsAllThatWaits: a message much larger than the read buffer,
// sent in one write. A read that fills the buffer may leave data in the
// socket with no report to come; the server reads on until it has all.
func TestReadsAllThatWaits(t *testing.T) {
	t.Parallel()
	srv, addr := serve(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/e", Handler: goEcho{}}}})
	t.Cleanup(func() { _ = srv.Close() })
	c := moontest.Dial(t, "ws://"+addr+"/e")
	payload := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	var frame bytes.Buffer
	_ = ws.WriteFrame(&frame, ws.MaskFrameInPlace(ws.NewBinaryFrame(bytes.Clone(payload))))
	for range 5 {
		if err := c.WriteRaw(frame.Bytes()); err != nil {
			t.Fatal(err)
		}
		c.ExpectBinary(payload)
	}
}

// TestEstablishedSocketLeavesNet: an upgraded plain TCP connection's
// socket is the router's own (no net objects or netpoller registration
// kept for an idle connection), and it still reads, writes and closes.
func TestEstablishedSocketLeavesNet(t *testing.T) {
	b, _, c := startBlocker(t)
	c.Send("block")
	sc := b.blocked(t)
	if !router.OwnsSocket(sc) {
		t.Fatal("the established socket is still net's")
	}
	close(b.release)
	c.Expect("block")
	c.Send("after")
	c.Expect("after")
	c.Close(1000)
}
