package moonwire

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/moonwire/moonwire/router/config"
)

// TestConsoleNonLoopbackConn: a console request that arrived on an
// address other hosts can reach (the -listen flag overrode a loopback
// server.listen) is refused whatever its Host says, unless forced.
func TestConsoleNonLoopbackConn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		local  net.Addr
		public bool
		want   int
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8765}, false, http.StatusOK},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 8765}, false, http.StatusOK},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 8765}, false, http.StatusForbidden},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 8765}, true, http.StatusOK},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, false, http.StatusForbidden},
		{nil, false, http.StatusForbidden},
	} {
		cfg := &config.Config{Server: config.Server{Console: config.Console{Enabled: true, Public: tc.public, ClientJS: true}}}
		h := consoleHTTP(cfg, nil)
		req := httptest.NewRequest("GET", "http://localhost/_console", nil)
		if tc.local != nil {
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, tc.local))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("local %v public %v: %d, want %d", tc.local, tc.public, w.Code, tc.want)
		}
	}
	if h := consoleHTTP(&config.Config{}, nil); h != nil {
		t.Errorf("console and client off: a handler %T, want none", h)
	}
}
