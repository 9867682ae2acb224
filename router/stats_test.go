package router_test

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// roomCaster joins every connection to room "r"; a message "go" is
// broadcast to the room, sender included.
type roomCaster struct {
	goEcho
	srv atomic.Pointer[router.Server]
}

func (h *roomCaster) Start(rt *router.Route) error {
	h.srv.Store(rt.Server())
	return nil
}
func (*roomCaster) Open(_ int, c *router.Conn) { _ = c.Join("r") }
func (h *roomCaster) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	if string(d) == "go" {
		h.srv.Load().Broadcast("r", k, []byte("hi"), nil)
	} else {
		_ = c.Send(k, d)
	}
}

// TestMessagesOutCounted: a broadcast to a room whose members come from
// two routes, joined alternately, counts each delivery on the recipient's
// route (moonwire_messages_sent_total) and on its connection (the access
// log's messages_out), as does a send to one connection.
func TestMessagesOutCounted(t *testing.T) {
	t.Parallel()
	var logs moontest.Logs
	h := new(roomCaster)
	srv, addr := serve(t, router.Config{
		Routes: []router.RouteSpec{{Pattern: "/a", Handler: h, Lanes: 1}, {Pattern: "/b", Handler: h, Lanes: 1}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	defer srv.Close()
	var clients []*moontest.Client
	for i, path := range []string{"/a", "/b", "/a", "/b", "/b"} {
		c := moontest.Dial(t, "ws://"+addr+path)
		clients = append(clients, c)
		moontest.WaitFor(t, "the join", func() bool { return srv.RoomSize("r") == i+1 })
	}
	clients[0].Send("echo")
	clients[0].Expect("echo")
	clients[1].Send("go")
	for _, c := range clients {
		c.Expect("hi")
	}
	// A count may land just after its delivery: wait for it, then check
	// that it settled where it should.
	want := map[string]int64{"/a": 3, "/b": 3}
	counted := func() bool {
		for _, st := range srv.RouteStats() {
			if st.MessagesOut != want[st.Pattern] {
				return false
			}
		}
		return true
	}
	moontest.WaitFor(t, "3 messages out on /a and 3 on /b", counted)
	clients[0].Close(1000)
	moontest.WaitFor(t, "the access log line", func() bool { return strings.Contains(logs.String(), "connection closed") })
	if line := logs.String(); !strings.Contains(line, "messages_out=2") {
		t.Errorf("access log: %s", line)
	}
}
