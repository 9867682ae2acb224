package moonwire_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestHTTPAllowReloads: a reload that adds a host to [http] allow lets
// scripts reach it from the next request.
func TestHTTPAllowReloads(t *testing.T) {
	t.Parallel()
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("A")) }))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("B")) }))
	defer b.Close()
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	cfg := func(allow string) string {
		return "[http]\nallow = [" + allow + "]\n[[routes]]\npath = \"/h\"\nscript = \"h.lua\"\nmodules = [\"http\"]\n"
	}
	s := moontest.Start(t, moontest.Files(cfg(`"`+host(a)+`"`), "scripts/h.lua", `
local M = {}
function M.on_message(conn, url)
  local st, h, body = http.request(url)
  if not st then conn:send("err " .. h) return end
  conn:send(st .. " " .. body)
end
return M
`))
	c := moontest.Dial(t, s.URL("/h"))
	c.Send(b.URL)
	c.Expect("err http: host not allowed: " + host(b))
	s.WriteFile(t, "moonwire.toml", cfg(`"`+host(a)+`", "`+host(b)+`"`))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c.Send(b.URL)
	c.Expect("200 B")
}
