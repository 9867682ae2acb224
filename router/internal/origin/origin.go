// Package origin parses allowed-origin patterns ("https://example.com",
// "https://*.example.com:8443", "*") and matches a request's Origin header
// against them. It is the one definition of what an allowed_origins entry
// may be: router/config uses Parse to refuse and normalise config entries,
// and the router uses Parse and Match on the request path, so an entry the
// config accepts is one the router matches as written.
//
// It is a leaf: it knows origins (RFC 6454) and how browsers serialise them
// (the WHATWG URL standard), and nothing of TOML, the config schema, HTTP
// requests or the router.
package origin

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Pattern is one parsed allowed origin. The zero Pattern matches nothing;
// Parse makes the useful ones.
type Pattern struct {
	any    bool
	scheme string     // lower-case
	host   string     // lower-case; "*" matches any run of characters; "" when ip is set
	ip     netip.Addr // an IPv6 literal host ("[::1]"), compared as an address
	port   string     // decimal without leading zeros, never the scheme's default; "" for none
}

// defaultPorts are the ports browsers leave out when they serialise an
// origin (WHATWG URL, "special schemes"): "https://a.com:443" is sent as
// "https://a.com", so a pattern naming one is normalised without it.
var defaultPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}

// Parse validates an allowed-origin pattern and returns it parsed: "*" (any
// origin with a host), or scheme://host[:port] with nothing after it, where
// host is a DNS name that may hold "*" wildcards (each matches any run of
// characters, dots included: "https://*.example.com" matches
// "https://a.b.example.com" but not "https://example.com"), an IPv4 address
// written as browsers write it, or a bracketed IPv6 address. Scheme and host
// are case-insensitive; a port must be 1-65535 and is dropped when it is the
// scheme's default, as browsers drop it. "null", the opaque origin, cannot
// be allowed by name. Errors read `invalid origin "s": why`.
func Parse(s string) (Pattern, error) {
	if s == "*" {
		return Pattern{any: true}, nil
	}
	bad := func(why string) (Pattern, error) {
		return Pattern{}, fmt.Errorf("invalid origin %q: %s", s, why)
	}
	if strings.EqualFold(s, "null") {
		return bad(`"null" is the opaque origin of sandboxed and file: pages, which cannot be allowed by name`)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return bad(`want scheme://host[:port], e.g. "https://example.com" or "https://*.example.com"`)
	}
	for i, r := range scheme {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return bad("bad scheme " + strconv.Quote(scheme))
		}
	}
	if strings.ContainsAny(rest, "/?#") {
		return bad("an origin has no path, query or fragment")
	}
	if strings.Contains(rest, "@") {
		return bad("an origin has no user info")
	}
	p := Pattern{scheme: strings.ToLower(scheme)}
	host, port := rest, ""
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return bad("unclosed [ in IPv6 host")
		}
		host = rest[:end+1]
		if after := rest[end+1:]; after != "" {
			if !strings.HasPrefix(after, ":") {
				return bad("unexpected text after IPv6 host")
			}
			port = after[1:]
			if port == "" {
				return bad("empty port")
			}
		}
		if host == "[]" {
			return bad("missing host")
		}
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return bad("bad IPv6 host")
		}
		p.ip = ip
	} else {
		if h, pt, ok := strings.Cut(rest, ":"); ok {
			host, port = h, pt
			if port == "" {
				return bad("empty port")
			}
		}
		if host == "" {
			return bad("missing host")
		}
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '*' || r == '_') {
				return bad(fmt.Sprintf("bad character %q in host", r))
			}
		}
		// A browser reads a host whose last label is a number as an IPv4
		// address and sends it in dotted-decimal form ("127.1" arrives as
		// "127.0.0.1"), so only that form could ever match.
		if !strings.Contains(host, "*") && endsInNumber(host) {
			if a, err := netip.ParseAddr(host); err != nil || !a.Is4() || a.String() != host {
				return bad("bad IPv4 host (write four decimal numbers, e.g. 192.0.2.1)")
			}
		}
		p.host = strings.ToLower(host)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return bad("port must be a number from 1 to 65535")
		}
		p.port = strconv.FormatUint(n, 10)
		if defaultPorts[p.scheme] == p.port {
			p.port = ""
		}
	}
	return p, nil
}

// endsInNumber reports whether the last label of host (a trailing dot
// aside) is a number in the WHATWG URL sense: decimal digits, or 0x and hex
// digits.
func endsInNumber(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		return strings.Trim(last[2:], "0123456789abcdefABCDEF") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// String returns the pattern in normal form ("*", or lower-case
// scheme://host[:port] without a default port); Parse of it gives the same
// Pattern.
func (p Pattern) String() string {
	if p.any {
		return "*"
	}
	host := p.host
	if p.ip.IsValid() {
		host = "[" + p.ip.String() + "]"
	}
	if p.port != "" {
		return p.scheme + "://" + host + ":" + p.port
	}
	return p.scheme + "://" + host
}

// Match reports whether the Origin header value origin matches one of
// patterns. The header is read as net/url reads it: a value without a host
// ("null", "example.com", "") is not an origin and matches nothing, not
// even "*"; a path, query or user info that a non-browser client may send
// is ignored. Its scheme and host compare case-insensitively (ASCII), its
// port exactly ("https://a.com:443" does not match "https://a.com"; browsers
// never send a default port). Match does not allocate beyond url.Parse.
func Match(patterns []Pattern, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme, host, port := u.Scheme, u.Hostname(), u.Port() // url.Parse lower-cases the scheme
	for i := range patterns {
		p := &patterns[i]
		if p.any {
			return true
		}
		if p.scheme != scheme || p.port != port {
			continue
		}
		if p.ip.IsValid() {
			if u.Host[0] == '[' {
				if a, err := netip.ParseAddr(host); err == nil && a == p.ip {
					return true
				}
			}
			continue
		}
		if glob(p.host, host) {
			return true
		}
	}
	return false
}

// glob reports whether name matches pattern, where "*" in pattern matches
// any run of bytes and other bytes compare ASCII case-insensitively
// (pattern is lower-case).
func glob(pattern, name string) bool {
	// Greedy with backtracking to the last star: linear for one star,
	// O(len(pattern)*len(name)) at worst.
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(name) {
		switch {
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, ni
			pi++
		case pi < len(pattern) && pattern[pi] == lower(name[ni]):
			pi++
			ni++
		case star >= 0:
			mark++
			pi, ni = star+1, mark
		default:
			return false
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
