package router

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// Strict request parsing. gobwas/ws's upgrader trims and splits header
// lines leniently (it is built to be fast, not to judge), so two Host
// headers, a NUL in a value, a space before a colon or a malformed
// Sec-WebSocket-Key would all be answered 101. A request that two parsers
// could read two ways is how request smuggling starts, so the router
// checks the whole head itself, by RFC 9112 and RFC 6455 §4.2.1, before it
// upgrades, and answers 400 to anything ambiguous.

// errBadRequest is a request the router refuses with 400; its text says
// why and is the response body.
type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

// checkHead validates a request head as received (request line, header
// lines, blank line) for an upgrade.
func checkHead(head []byte) error {
	// The request line was checked by parseRequestLine.
	_, rest, _ := bytes.Cut(head, []byte("\n"))
	var hosts, keys int
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // the blank line ends the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			// RFC 9112 §5.2: a server must reject obsolete line folding
			// (or replace it, which would change what the header says).
			return errBadRequest("obsolete line folding in a header")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadRequest("malformed header line")
		}
		name, value := line[:colon], line[colon+1:]
		for _, c := range name {
			if !isTokenChar(c) {
				// Includes whitespace before the colon (RFC 9112 §5.1:
				// must be rejected with 400).
				return errBadRequest("invalid character in a header name")
			}
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				// A NUL, a bare CR or another control character (RFC 9110
				// §5.5).
				return errBadRequest("invalid character in a header value")
			}
		}
		switch {
		case asciiEqualFold(name, "host"):
			if hosts++; hosts > 1 {
				return errBadRequest("more than one Host header")
			}
		case asciiEqualFold(name, "sec-websocket-key"):
			if keys++; keys > 1 {
				return errBadRequest("more than one Sec-WebSocket-Key header")
			}
			if !validKey(bytes.Trim(value, " \t")) {
				// RFC 6455 §4.1: the base64 encoding of 16 random bytes.
				return errBadRequest("Sec-WebSocket-Key is not 16 bytes in base64")
			}
		case asciiEqualFold(name, "transfer-encoding"):
			// A GET upgrade has no body; one announced would be read as
			// WebSocket frames by us and as a body by a proxy in front.
			return errBadRequest("an upgrade request has no body")
		case asciiEqualFold(name, "content-length"):
			if v := bytes.Trim(value, " \t"); len(v) != 1 || v[0] != '0' {
				return errBadRequest("an upgrade request has no body")
			}
		}
	}
	return nil
}

// validKey reports whether k is the base64 encoding of 16 bytes.
func validKey(k []byte) bool {
	var b [18]byte
	n, err := base64.StdEncoding.Decode(b[:], k)
	return len(k) == 24 && err == nil && n == 16
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// §5.6.2): a header name.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// errBadPath is a request path normalizePath refuses.
var errBadPath = errBadRequest("malformed request path")

// normalizePath returns the form of an escaped request path that routes
// are matched against, the same for upgrades and for plain HTTP, so that a
// path cannot reach a route one way and miss it the other: escapes of
// unreserved characters are decoded ("/%65cho" is "/echo", RFC 3986
// §6.2.2.2), other escapes get upper-case hex (%2f is %2F, §6.2.2.1), and a
// path with a malformed escape, an escaped NUL, a control character or a
// dot-segment ("/a/../b": clients remove them before sending, §5.2.4) is
// refused.
func normalizePath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", errBadPath
	}
	clean := true
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '%' || c <= ' ' || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		if hasDotSegment(p) {
			return "", errBadPath
		}
		return p, nil // the usual case: nothing to rewrite, no allocation
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return "", errBadPath
		case c != '%':
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", errBadPath
		}
		d := unhex(p[i+1])<<4 | unhex(p[i+2])
		switch {
		case d == 0:
			return "", errBadPath
		case isUnreserved(d):
			b.WriteByte(d)
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[d>>4])
			b.WriteByte(upperHex[d&15])
		}
		i += 2
	}
	out := b.String()
	if hasDotSegment(out) {
		return "", errBadPath
	}
	return out, nil
}

// hasDotSegment reports whether p has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for i := 0; i < len(p); {
		j := strings.IndexByte(p[i+1:], '/')
		if j < 0 {
			j = len(p) - i - 1
		}
		if seg := p[i+1 : i+1+j]; seg == "." || seg == ".." {
			return true
		}
		i += 1 + j
	}
	return false
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// isUnreserved reports whether c is an unreserved URI character (RFC 3986
// §2.3), whose escaped and plain forms are equivalent.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// errOtherHost refuses an absolute-form request for another host: a
// request meant for a proxy, or one crafted to be routed by one host and
// served as another.
var errOtherHost = errBadRequest("the request target names another host than the Host header")

// sameAuthority reports whether an absolute-form target's authority and
// the Host header name the same host and port (default ports aside).
func sameAuthority(target, host, scheme string) bool {
	return strings.EqualFold(stripDefaultPort(target, scheme), stripDefaultPort(host, scheme))
}

func stripDefaultPort(hostport, scheme string) string {
	switch scheme {
	case "http", "ws":
		return strings.TrimSuffix(hostport, ":80")
	case "https", "wss":
		return strings.TrimSuffix(hostport, ":443")
	}
	return hostport
}
