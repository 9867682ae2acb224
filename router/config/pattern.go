package config

import (
	"fmt"
	"strings"
)

// checkPattern validates a route path pattern and returns its shape: the
// pattern with every parameter name erased. Two routes with the same shape
// match exactly the same requests, which is what makes them duplicates even
// when their parameter names differ.
//
// A pattern is "/" or "/" followed by "/"-separated segments, each either a
// literal (RFC 3986 path characters, percent-escapes allowed) or a whole
// {name} parameter with name = [A-Za-z_][A-Za-z0-9_]*. Empty, "." and ".."
// segments are refused because clients and proxies normalise them away, so
// such a route could never be reached as written.
func checkPattern(p string) (string, error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("invalid path %q: %s", p, fmt.Sprintf(format, args...))
	}
	if !strings.HasPrefix(p, "/") {
		return bad(`must start with "/"`)
	}
	if p == "/" {
		return "/", nil
	}
	var (
		shape  strings.Builder
		params = map[string]bool{}
	)
	for _, seg := range strings.Split(p[1:], "/") {
		shape.WriteByte('/')
		switch {
		case seg == "":
			return bad(`empty segment (no "//" and no trailing "/")`)
		case seg == "." || seg == "..":
			return bad("%q segments are not allowed", seg)
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") && len(seg) >= 2:
			name := seg[1 : len(seg)-1]
			if !isParamName(name) {
				return bad("parameter name %q: want a letter or _ followed by letters, digits or _", name)
			}
			if params[name] {
				return bad("parameter {%s} appears twice", name)
			}
			params[name] = true
			shape.WriteString("{}")
		case strings.ContainsAny(seg, "{}"):
			return bad(`a parameter must be a whole segment, like "/rooms/{room}"`)
		default:
			if err := checkLiteral(seg); err != "" {
				return bad("%s", err)
			}
			shape.WriteString(seg)
		}
	}
	return shape.String(), nil
}

func isParamName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// checkLiteral allows RFC 3986 pchar: unreserved, sub-delims, ":", "@"
// and %XX escapes.
func checkLiteral(seg string) string {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0:
		case c == '%':
			if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
				return `"%" must start an escape like %20`
			}
			i += 2
		default:
			return fmt.Sprintf("character %q is not allowed in a path (escape it as %%%02X)", c, c)
		}
	}
	return ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
