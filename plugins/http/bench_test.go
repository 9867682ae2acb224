package http_test

import (
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// BenchmarkEchoResumable measures what running callbacks as coroutines
// costs a route that lists the http module but does not wait: echo.lua's
// on_message through a resumable callback, against the same route
// without the module (plain).
func BenchmarkEchoResumable(b *testing.B) {
	const script = `return { on_message = function(c, data, kind) c:send(data, kind) end }`
	for _, tc := range []struct{ name, modules string }{
		{"plain", ""},
		{"resumable", `modules = ["http"]`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := "[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\nvms = 1\n" + tc.modules + "\n"
			s := moontest.Start(b, moontest.Files(cfg, "scripts/echo.lua", script))
			c := moontest.Dial(b, s.URL("/echo"))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c.Send("0123456789abcdef0123456789abcdef")
				c.Expect("0123456789abcdef0123456789abcdef")
			}
		})
	}
}
