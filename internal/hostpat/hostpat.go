// Package hostpat parses and matches the host patterns of [http] allow:
// which hosts scripts may reach. It is a leaf shared by the config
// loader, which refuses a bad pattern with its key, and the outbound
// HTTP client, which enforces them.
//
// A pattern is a host, optionally with a port:
//
//	api.example.com        that host, on its scheme's default port (80, 443)
//	api.example.com:8443   that host and port
//	api.example.com:*      that host, any port
//	*.internal.example     any subdomain (not internal.example itself)
//	127.0.0.1:8080, [::1]:8080   an address
//
// Names are matched case-insensitively, without a trailing dot.
package hostpat

import (
	"errors"
	"net"
	"strconv"
	"strings"
)

// Pattern is one parsed allow entry.
type Pattern struct {
	// Text is the pattern as written (normalised): the label metrics use.
	Text     string
	host     string // lower-case; without "*." for a wildcard
	wildcard bool
	port     int // 0: the scheme's default port; -1: any
}

// Parse parses an allow entry.
func Parse(s string) (Pattern, error) {
	p := Pattern{Text: strings.ToLower(strings.TrimSpace(s))}
	rest := p.Text
	if rest == "" {
		return p, errors.New("empty host pattern")
	}
	if strings.Contains(rest, "/") {
		return p, errors.New("a host pattern is host[:port], not a URL: " + s)
	}
	host, port := rest, ""
	if h, pt, err := net.SplitHostPort(rest); err == nil {
		host, port = h, pt
	} else if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		host = rest[1 : len(rest)-1]
	}
	switch port {
	case "":
	case "*":
		p.port = -1
	default:
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return p, errors.New("bad port in host pattern " + s)
		}
		p.port = n
	}
	if after, ok := strings.CutPrefix(host, "*."); ok {
		p.wildcard, host = true, after
	}
	host = strings.TrimSuffix(host, ".")
	if net.ParseIP(host) != nil {
		if p.wildcard {
			return p, errors.New("a wildcard needs a name, not an address: " + s)
		}
		p.host = net.ParseIP(host).String()
		return p, nil
	}
	if !validName(host) {
		return p, errors.New("bad host name in host pattern " + s)
	}
	p.host = host
	return p, nil
}

func validName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Match returns the first pattern allowing host (a URL's host, without
// port) on port under scheme, and whether there is one.
func Match(pats []Pattern, scheme, host string, port int) (Pattern, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		host = ip.String()
	}
	def := 80
	if scheme == "https" {
		def = 443
	}
	for _, p := range pats {
		switch {
		case p.port == 0 && port != def, p.port > 0 && port != p.port:
			continue
		}
		if p.wildcard {
			if strings.HasSuffix(host, "."+p.host) {
				return p, true
			}
			continue
		}
		if host == p.host {
			return p, true
		}
	}
	return Pattern{}, false
}
