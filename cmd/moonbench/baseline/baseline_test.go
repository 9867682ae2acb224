package baseline

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func dial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, _, _, err := ws.Dial(context.Background(), "ws://"+s.Addr().String()+"/any")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func listen(t *testing.T, kind Kind, opts Options) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", kind, opts)
	if err != nil {
		t.Fatal(err)
	}
	for s.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {Buffered: true}} {
		s := listen(t, KindEcho, opts)
		c := dial(t, s)
		if err := wsutil.WriteClientMessage(c, ws.OpPing, []byte("p")); err != nil {
			t.Fatal(err)
		}
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			if err := wsutil.WriteClientMessage(c, op, []byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		msgs, err := wsutil.ReadServerMessage(c, nil)
		if err != nil || len(msgs) != 1 || msgs[0].OpCode != ws.OpPong || string(msgs[0].Payload) != "p" {
			t.Fatalf("%+v: pong: %+v %v", opts, msgs, err)
		}
		for _, want := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			msg, op, err := wsutil.ReadServerData(c)
			if err != nil || op != want || string(msg) != "hello" {
				t.Fatalf("%+v: got %q %v %v, want hello as %v", opts, msg, op, err, want)
			}
		}
	}
}

func TestChatRelaysToOthers(t *testing.T) {
	t.Parallel()
	for _, opts := range []Options{{}, {Buffered: true}} {
		s := listen(t, KindChat, opts)
		a, b, c := dial(t, s), dial(t, s), dial(t, s)
		// The server adds a connection to the room right after the upgrade:
		// wait until all three are in.
		for {
			s.mu.RLock()
			n := len(s.peers)
			s.mu.RUnlock()
			if n == 3 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := wsutil.WriteClientBinary(a, []byte("from a")); err != nil {
			t.Fatal(err)
		}
		for _, r := range []net.Conn{b, c} {
			msg, op, err := wsutil.ReadServerData(r)
			if err != nil || op != ws.OpBinary || string(msg) != "from a" {
				t.Fatalf("%+v: got %q %v %v", opts, msg, op, err)
			}
		}
		// The sender does not hear itself: its next message is b's.
		if err := wsutil.WriteClientText(b, []byte("from b")); err != nil {
			t.Fatal(err)
		}
		msg, _, err := wsutil.ReadServerData(a)
		if err != nil || string(msg) != "from b" {
			t.Fatalf("%+v: a got %q %v", opts, msg, err)
		}
	}
}

func TestCloseEndsConnections(t *testing.T) {
	t.Parallel()
	s := listen(t, KindEcho, Options{})
	c := dial(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wsutil.ReadServerData(c); err == nil {
		t.Fatal("connection still open after Close")
	}
	if _, err := ParseKind("nope"); err == nil {
		t.Fatal("ParseKind accepted nope")
	}
}
