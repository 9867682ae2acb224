package router_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// holder suspends a message "wait" (Conn.Hold) until release is closed,
// then answers "done" and releases the connection from a task posted to
// its lane, as a script waiting on the network does. Other messages echo.
// Handshakes of ?defer=1 are decided later (Request.Defer), when release
// is closed; ?defer=never are never decided.
type holder struct {
	goEcho
	rt      *router.Route
	release chan struct{}
	mu      sync.Mutex
	events  []string
}

func (h *holder) note(s string) {
	h.mu.Lock()
	h.events = append(h.events, s)
	h.mu.Unlock()
}

func (h *holder) Start(rt *router.Route) error { h.rt = rt; return nil }

func (h *holder) Handshake(lane int, req *router.Request) router.Verdict {
	switch req.Query().Get("defer") {
	case "1":
		answer := req.Defer()
		go func() {
			<-h.release
			h.rt.Post(lane, func() { answer(router.Verdict{Attrs: map[string]any{"deferred": true}}) })
		}()
		return router.Verdict{Reject: true} // ignored: deferred
	case "never":
		req.Defer()
	}
	return router.Verdict{}
}

func (h *holder) SkipHandshake() bool { return false }

func (h *holder) Message(lane int, c *router.Conn, k router.Kind, d []byte) {
	if string(d) != "wait" {
		h.note("msg " + string(d))
		_ = c.Send(k, d)
		return
	}
	c.Hold()
	go func() {
		<-h.release
		h.rt.Post(lane, func() {
			h.note("resumed")
			_ = c.SendString(router.Text, "done")
			c.Release()
		})
	}()
}

func (h *holder) Close(int, *router.Conn, int, string) { h.note("close") }

// TestHoldKeepsOrder: a held connection's later messages and its close
// wait, in order, until Release; other connections on the same lane go
// on meanwhile.
func TestHoldKeepsOrder(t *testing.T) {
	t.Parallel()
	h := &holder{release: make(chan struct{})}
	srv, addr := serve(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/h", Handler: h, Lanes: 1}}})
	t.Cleanup(func() { _ = srv.Close() })
	held := moontest.Dial(t, "ws://"+addr+"/h")
	other := moontest.Dial(t, "ws://"+addr+"/h")
	held.Send("wait")
	held.Send("a")
	held.Send("b")
	if err := held.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(1000, "")); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		msg := "o" + string(rune('a'+i))
		other.Send(msg)
		other.Expect(msg) // the lane serves others while one is held
	}
	close(h.release)
	held.Expect("done")
	held.Expect("a")
	held.Expect("b")
	held.ExpectClose(1000)
	moontest.WaitFor(t, "the held connection's close", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.events) > 0 && h.events[len(h.events)-1] == "close"
	})
	h.mu.Lock()
	var mine []string
	for _, e := range h.events {
		if e == "resumed" || e == "msg a" || e == "msg b" || e == "close" {
			mine = append(mine, e)
		}
	}
	h.mu.Unlock()
	if want := []string{"resumed", "msg a", "msg b", "close"}; len(mine) != 4 || mine[0] != want[0] || mine[1] != want[1] || mine[2] != want[2] || mine[3] != want[3] {
		t.Fatalf("events %v, want %v", mine, want)
	}
}

// TestDeferredVerdict: a handshake decided later is answered when the
// verdict comes, and refused 503 at the handshake timeout when it never
// does.
func TestDeferredVerdict(t *testing.T) {
	t.Parallel()
	h := &holder{release: make(chan struct{})}
	srv, addr := serve(t, router.Config{HandshakeTimeout: 500 * time.Millisecond,
		Routes: []router.RouteSpec{{Pattern: "/h", Handler: h, Lanes: 1}}})
	t.Cleanup(func() { _ = srv.Close() })
	_, err := moontest.TryDial(t, "ws://"+addr+"/h?defer=never")
	if ref, ok := err.(*moontest.Refusal); !ok || ref.Status != 503 {
		t.Fatalf("never decided: %v, want 503", err)
	}
	dialed := make(chan error, 1)
	go func() {
		c, err := moontest.TryDial(t, "ws://"+addr+"/h?defer=1")
		if err == nil {
			c.Conn.Close()
		}
		dialed <- err
	}()
	close(h.release)
	if err := <-dialed; err != nil {
		t.Fatalf("deferred accept: %v", err)
	}
}
