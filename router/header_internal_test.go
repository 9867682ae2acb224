package router

import "testing"

// TestPackedHeaderKeepsEveryValue: a connection's packed headers answer
// as the request's did, for every name, whatever the values hold.
func TestPackedHeaderKeepsEveryValue(t *testing.T) {
	var h Header
	h.add("host", "example.com:8080")
	h.add("x-empty", "")
	h.add("x-colons", "a:b::c")
	h.add("x-twice", "one")
	h.add("x-twice", "two")
	h.add("hostname", "other")
	h.add("cookie", "a=1; b=2")
	p := packed(h)
	for _, name := range []string{"host", "x-empty", "x-colons", "x-twice", "hostname", "cookie", "missing", "hos", "x", ""} {
		if got, want := p.Get(name), h.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
	}
	if got := p.Get("x-twice"); got != "one, two" {
		t.Errorf("x-twice = %q", got)
	}
	if packed(nil) != "" || packedHeader("").Get("host") != "" {
		t.Error("no headers")
	}
}

// BenchmarkPackedHeaderGet: conn:header on a browser's dozen headers.
func BenchmarkPackedHeaderGet(b *testing.B) {
	var h Header
	for _, kv := range [][2]string{{"host", "127.0.0.1:8765"}, {"pragma", "no-cache"}, {"cache-control", "no-cache"},
		{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
		{"origin", "http://127.0.0.1:8765"}, {"accept-encoding", "gzip, deflate, br, zstd"},
		{"accept-language", "en-US,en;q=0.9"}, {"cookie", "session=3f9a0c1e5b7d4a2c8e6f1b3d5a7c9e0f"}} {
		h.add(kv[0], kv[1])
	}
	p := packed(h)
	b.ReportAllocs()
	for b.Loop() {
		if p.Get("cookie") == "" {
			b.Fatal("no cookie")
		}
	}
}

// packed returns h as a connection keeps it, behind its id, address and
// path (Conn.setStrings).
func packed(h Header) packedHeader {
	var c Conn
	c.setStrings("node-1", "127.0.0.1:5000", "/chat/host:x", h)
	if c.ID() != "node-1" || c.RemoteAddr() != "127.0.0.1:5000" || c.Path() != "/chat/host:x" {
		panic("setStrings: " + c.strs)
	}
	return c.header()
}
