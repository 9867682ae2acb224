package router

import (
	"bufio"
	"strings"
	"testing"
)

// plainHandler is a Handler with an HTTP side, for plainRequest: only
// ServesHTTP is ever asked.
type plainHandler struct {
	Handler
	serves bool
}

func (h plainHandler) ServesHTTP() bool { return h.serves }

func (h plainHandler) HTTP(int, *HTTPRequest, func(HTTPResponse)) {}

func routeWith(h Handler) *Route {
	rt := &Route{}
	rt.handler.Store(&handlerBox{h})
	return rt
}

func TestPlainRequest(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name, head string
		plain      bool
	}{
		{"no headers", "GET /a HTTP/1.1\r\n\r\n", true},
		{"plain", "GET /a HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", true},
		{"bare LF", "GET /a HTTP/1.1\nHost: x\n\n", true},
		{"upgrade", "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", false},
		{"upgrade, any case", "GET /a HTTP/1.1\r\nHost: x\r\nuPGRADE: websocket\r\n\r\n", false},
		{"a WebSocket key", "GET /a HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n", false},
		{"a WebSocket version", "GET /a HTTP/1.1\r\nsec-websocket-version: 13\r\n\r\n", false},
		{"Connection: upgrade", "GET /a HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n", false},
		{"Connection: keep-alive", "GET /a HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true},
		{"a value that mentions upgrade", "GET /a HTTP/1.1\r\nX-Note: Upgrade: websocket\r\n\r\n", true},
		{"a body that looks like headers", "GET /a HTTP/1.1\r\nContent-Length: 20\r\n\r\nUpgrade: websocket\r\n", true},
		{"past the window, plain", "GET /a HTTP/1.1\r\nX-Big: " + big + "\r\n\r\n", true},
		{"past the window, upgrade first", "GET /a HTTP/1.1\r\nUpgrade: websocket\r\nX-Big: " + big + "\r\n\r\n", false},
		{"cut short", "GET /a HTTP/1.1\r\nHost: x\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			br := bufio.NewReaderSize(strings.NewReader(tc.head), maxRequestLine)
			if got := plainRequest(routeWith(plainHandler{serves: true}), br); got != tc.plain {
				t.Fatalf("plain = %v, want %v", got, tc.plain)
			}
			// Only peeked: the request is still whole in br.
			if b, _ := br.Peek(min(len(tc.head), maxRequestLine)); string(b) != tc.head[:len(b)] {
				t.Fatalf("br lost the head: %q", b)
			}
			if plainRequest(routeWith(plainHandler{serves: false}), bufio.NewReader(strings.NewReader(tc.head))) {
				t.Fatal("plain without an HTTP side")
			}
		})
	}
}

// BenchmarkPlainRequest is what deciding costs a browser's upgrade on a
// route with an HTTP side (the head is scanned) and without one (a type
// check).
func BenchmarkPlainRequest(b *testing.B) {
	head := "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nConnection: Upgrade\r\nPragma: no-cache\r\n" +
		"Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n" +
		"Upgrade: websocket\r\nOrigin: http://127.0.0.1:8765\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
	for _, bc := range []struct {
		name string
		rt   *Route
	}{
		{"with on_http", routeWith(plainHandler{serves: true})},
		{"without", routeWith(plainHandler{serves: false})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			br := bufio.NewReaderSize(strings.NewReader(head), maxRequestLine)
			_, _ = br.Peek(len(head))
			b.ReportAllocs()
			for b.Loop() {
				if plainRequest(bc.rt, br) {
					b.Fatal("an upgrade taken for plain HTTP")
				}
			}
		})
	}
}

// FuzzPlainRequest: whatever a client sends, deciding never panics,
// consumes nothing, and agrees with the upgrade headers of a head that
// fits the window.
func FuzzPlainRequest(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
	f.Add("GET / HTTP/1.1\nconnection: a, upgrade\n\n")
	f.Add("GET / HTTP/1.1\r\nSec-WebSocket-Key\r\n\r\n")
	f.Add("\n\n\n")
	rt := routeWith(plainHandler{serves: true})
	f.Fuzz(func(t *testing.T, head string) {
		br := bufio.NewReaderSize(strings.NewReader(head), maxRequestLine)
		plain := plainRequest(rt, br)
		if b, _ := br.Peek(min(len(head), maxRequestLine)); string(b) != head[:len(b)] {
			t.Fatalf("br lost the head: %q", b)
		}
		end := strings.Index(head, "\n\n")
		if e := strings.Index(head, "\n\r\n"); e >= 0 && (end < 0 || e < end) {
			end = e
		}
		if end < 0 || end >= maxRequestLine-3 {
			return // cut short or past the window: judged by what is there
		}
		lower := strings.ToLower(head[:end+1])
		if plain && (strings.Contains(lower, "\nupgrade:") || strings.Contains(lower, "\nsec-websocket-key:")) {
			t.Fatalf("plain, with an upgrade header in %q", head)
		}
	})
}
