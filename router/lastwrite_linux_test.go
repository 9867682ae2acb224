package router_test

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// TestPeerCloseAnsweredWithTheFIN: the close frame that answers the
// peer's comes in the segment that ends the stream (see wsconn.Flusher),
// not in one of its own with a FIN behind it. Besides that segment the
// peer may see one without data, the server kernel's ACK of its close
// frame (sent at once, or on the delayed-ACK timer when the answer is
// slow), but not two: without MSG_MORE it sees the ACK and the FIN.
func TestPeerCloseAnsweredWithTheFIN(t *testing.T) {
	t.Parallel()
	srv, addr := serve(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}}}})
	defer srv.Close()
	for range 5 {
		c := moontest.Dial(t, "ws://"+addr+"/echo")
		c.Send("x")
		c.Expect("x") // whatever the server sent before is read
		before := tcptest.Info(t, c.Conn.(*net.TCPConn))
		must(t, c.WriteFrame(ws.OpClose, true, binary.BigEndian.AppendUint16(nil, 1000)))
		if f := c.Next(); f.Op != ws.OpClose {
			t.Fatalf("got %v, want the close frame", f.Op)
		}
		c.ExpectEOF()
		after := tcptest.Info(t, c.Conn.(*net.TCPConn))
		_ = c.Conn.Close()
		data := after.Data_segs_in - before.Data_segs_in
		bare := after.Segs_in - before.Segs_in - data
		if data != 1 || bare > 1 {
			t.Fatalf("from the close frame to the end of the stream: %d segments with data and %d without; want 1 and at most 1 (an ACK)", data, bare)
		}
	}
}
