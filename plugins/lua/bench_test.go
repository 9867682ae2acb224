package lua

import (
	"testing"
	"testing/fstest"

	"github.com/moonwire/moonwire/router"
)

// BenchmarkHandshake is the Lua side of an upgrade through a token check
// in on_handshake (cmd/moonbench's auth route): the request table built,
// the callback run, its verdict read.
func BenchmarkHandshake(b *testing.B) {
	fsys := fstest.MapFS{"auth.lua": {Data: []byte(`
local M = {}
function M.on_handshake(req)
  local token = req.headers["x-auth-token"]
  if token then
    for _, t in ipairs(ws.settings.tokens) do
      if t == token then return true end
    end
  end
  return false, 401, "Invalid or missing token"
end
return M
`)}}
	e := New(Options{})
	defer e.Close()
	r, err := e.NewRoute(RouteConfig{Pattern: "/auth", FS: fsys, Script: "auth.lua",
		Settings: map[string]any{"tokens": []any{"token_123", "token_456"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Release()
	req := &router.Request{
		Path:       "/auth",
		RemoteAddr: "127.0.0.1:40000",
		Header: router.Header{
			"host", "127.0.0.1:8765",
			"upgrade", "websocket",
			"connection", "Upgrade",
			"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==",
			"sec-websocket-version", "13",
			"x-auth-token", "token_456",
		},
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := r.Handshake(0, req); v.Reject {
			b.Fatalf("refused: %+v", v)
		}
	}
}
