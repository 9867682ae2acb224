package router_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// seen is what a connection's Open found of its request.
type seen struct {
	path, params, first, second, query string
}

// reuseHandler records each connection's request as Open sees it; on
// /keep it also keeps every Request its Handshake was handed.
type reuseHandler struct {
	skip   bool
	opened chan seen
	mu     sync.Mutex
	kept   []*router.Request
}

func (h *reuseHandler) Start(*router.Route) error { return nil }
func (h *reuseHandler) Handshake(_ int, req *router.Request) router.Verdict {
	h.mu.Lock()
	h.kept = append(h.kept, req)
	h.mu.Unlock()
	return router.Verdict{}
}
func (h *reuseHandler) SkipHandshake() bool { return h.skip }
func (h *reuseHandler) Open(_ int, c *router.Conn) {
	h.opened <- seen{c.Path(), fmt.Sprint(c.Params()), c.Header("x-first"), c.Header("x-second"), c.Query("q")}
}
func (h *reuseHandler) Message(int, *router.Conn, router.Kind, []byte) {}
func (h *reuseHandler) Close(int, *router.Conn, int, string)           {}
func (h *reuseHandler) Stop()                                          {}

// TestHandshakeStateReuse: a handshaker goroutine reuses its handshake
// state from one socket to the next. Nothing of one request may reach
// the next connection (headers, query, path parameters), and a Request a
// handler was handed is never reused: a handler may keep it.
func TestHandshakeStateReuse(t *testing.T) {
	t.Parallel()
	skip := &reuseHandler{skip: true, opened: make(chan seen, 1)}
	keep := &reuseHandler{opened: make(chan seen, 1)}
	for _, poller := range []bool{true, false} {
		t.Run(fmt.Sprintf("poller=%v", poller), func(t *testing.T) {
			srv, addr := serve(t, router.Config{
				Routes: []router.RouteSpec{
					{Pattern: "/skip/{room}", Handler: skip},
					{Pattern: "/keep", Handler: keep},
				},
				Logger:   slog.New(slog.DiscardHandler),
				NoPoller: !poller,
			})
			t.Cleanup(func() { _ = srv.Close() })

			dial := func(h *reuseHandler, target string, header http.Header) seen {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
				defer cancel()
				d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}
				nc, _, _, err := d.Dial(ctx, "ws://"+addr+target)
				if err != nil {
					t.Fatalf("dial %s: %v", target, err)
				}
				defer nc.Close()
				select {
				case s := <-h.opened:
					return s
				case <-ctx.Done():
					t.Fatalf("%s: no Open", target)
				}
				return seen{}
			}
			// One socket after another, so that one handshaker serves
			// them all; each request carries what the one before did not.
			for i := range 20 {
				got := dial(skip, fmt.Sprintf("/skip/r%d?q=%d", i, i), http.Header{"X-First": {fmt.Sprint(i)}})
				if want := (seen{fmt.Sprintf("/skip/r%d", i), fmt.Sprintf("map[room:r%d]", i), fmt.Sprint(i), "", fmt.Sprint(i)}); got != want {
					t.Fatalf("first kind %d: %+v, want %+v", i, got, want)
				}
				got = dial(skip, "/skip/plain", http.Header{"X-Second": {"2"}})
				if want := (seen{"/skip/plain", "map[room:plain]", "", "2", ""}); got != want {
					t.Fatalf("second kind %d: %+v, want %+v", i, got, want)
				}
				got = dial(keep, fmt.Sprintf("/keep?q=k%d", i), http.Header{"X-First": {fmt.Sprintf("k%d", i)}})
				if want := (seen{"/keep", "map[]", fmt.Sprintf("k%d", i), "", fmt.Sprintf("k%d", i)}); got != want {
					t.Fatalf("kept %d: %+v, want %+v", i, got, want)
				}
			}
		})
	}
	// Every Request handed to a handler still holds its own request.
	keep.mu.Lock()
	defer keep.mu.Unlock()
	if len(keep.kept) != 40 {
		t.Fatalf("%d requests kept, want 40", len(keep.kept))
	}
	for i, req := range keep.kept {
		n := i % 20
		if req.Path != "/keep" || req.Header.Get("x-first") != fmt.Sprintf("k%d", n) || req.Query().Get("q") != fmt.Sprintf("k%d", n) {
			t.Errorf("kept request %d was changed: path %q x-first %q query %q", i, req.Path, req.Header.Get("x-first"), req.RawQuery)
		}
	}
}
