package origin

import (
	"net"
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	ok := []struct{ in, want string }{
		{"*", "*"},
		{"https://example.com", "https://example.com"},
		{"HTTPS://Example.COM", "https://example.com"},
		{"https://*.example.com", "https://*.example.com"},
		{"https://*.Example.com:8443", "https://*.example.com:8443"},
		{"http://localhost:3000", "http://localhost:3000"},
		{"https://example.com:443", "https://example.com"}, // browsers leave out a default port
		{"http://example.com:80", "http://example.com"},
		{"https://example.com:80", "https://example.com:80"}, // not https's default
		{"http://example.com:0080", "http://example.com"},    // a port is a number
		{"https://example.com:08443", "https://example.com:8443"},
		{"chrome-extension://abc", "chrome-extension://abc"},
		{"chrome-extension://abc:443", "chrome-extension://abc:443"}, // no default port
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://192.168.1.*", "http://192.168.1.*"},
		{"http://[::1]", "http://[::1]"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://[0:0::1]:80", "http://[::1]"},
		{"http://[::FFFF:1.2.3.4]", "http://[::ffff:1.2.3.4]"},
		{"http://my_host.example", "http://my_host.example"},
	}
	for _, c := range ok {
		p, err := Parse(c.in)
		if err != nil || p.String() != c.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, p, err, c.want)
			continue
		}
		if q, err := Parse(p.String()); err != nil || q != p {
			t.Errorf("Parse(%q) = %#v, %v; want %#v, the pattern it came from", p.String(), q, err, p)
		}
	}
	bad := []struct{ in, why string }{
		{"", "want scheme://host[:port]"},
		{"**", "want scheme://host[:port]"},
		{"example.com", "want scheme://host[:port]"},
		{"://a.com", "want scheme://host[:port]"},
		{"null", `"null" is the opaque origin`},
		{"1http://a.com", "bad scheme"},
		{"ht tp://a.com", "bad scheme"},
		{"https://", "missing host"},
		{"https://:443", "missing host"},
		{"https://[]", "missing host"},
		{"https://a.com/", "no path"},
		{"https://a.com/x", "no path"},
		{"https://a.com?x", "no path"},
		{"https://a.com#x", "no path"},
		{"https://u:p@a.com", "no user info"},
		{"https://a.com:", "empty port"},
		{"https://[::1]:", "empty port"},
		{"https://a.com:x", "port must be"},
		{"https://a.com:0", "port must be"},
		{"https://a.com:70000", "port must be"},
		{"https://a.com:+1", "port must be"},
		{"https://a.com:1:2", "port must be"},
		{"https://a b.com", "bad character"},
		{"https://a[1-2].com", "bad character"},
		{"https://a?.com", "no path"},
		{"https://bücher.example", "bad character"},
		{"https://a%2e.com", "bad character"},
		{"https://[::1", "unclosed ["},
		{"https://[::1]x", "unexpected text"},
		{"https://[zz]", "bad IPv6 host"},
		{"https://[:::]", "bad IPv6 host"},
		{"https://[1.2.3.4]", "bad IPv6 host"},
		{"https://[fe80::1%25eth0]", "bad IPv6 host"},
		{"https://[*::1]", "bad IPv6 host"},
		{"http://127.1", "bad IPv4 host"},
		{"http://010.0.0.1", "bad IPv4 host"},
		{"http://0x7f.0.0.1", "bad IPv4 host"},
		{"http://1.2.3.4.", "bad IPv4 host"},
		{"http://example.0x1", "bad IPv4 host"},
		{"http://256.0.0.1", "bad IPv4 host"},
	}
	for _, c := range bad {
		p, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) = %q, accepted", c.in, p)
			continue
		}
		if !strings.Contains(err.Error(), c.why) || !strings.HasPrefix(err.Error(), "invalid origin ") {
			t.Errorf("Parse(%q): %v; want `invalid origin ...: %s...`", c.in, err, c.why)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		patterns []string
		origin   string
		want     bool
	}{
		{[]string{"https://example.com"}, "https://example.com", true},
		{[]string{"https://example.com"}, "HTTPS://EXAMPLE.COM", true},
		{[]string{"HTTPS://Example.com"}, "https://eXample.com", true},
		{[]string{"https://example.com"}, "http://example.com", false},
		{[]string{"https://example.com"}, "https://example.com.evil.com", false},
		{[]string{"https://example.com"}, "https://evil.com", false},
		// ports
		{[]string{"https://example.com"}, "https://example.com:8443", false},
		{[]string{"https://example.com:8443"}, "https://example.com:8443", true},
		{[]string{"https://example.com:8443"}, "https://example.com", false},
		{[]string{"https://example.com:443"}, "https://example.com", true}, // as a browser sends it
		{[]string{"https://example.com"}, "https://example.com:443", false},
		{[]string{"https://example.com"}, "https://example.com:", true}, // net/url: an empty port is none
		// wildcards
		{[]string{"https://*.example.com"}, "https://app.example.com", true},
		{[]string{"https://*.example.com"}, "https://a.b.example.com", true},
		{[]string{"https://*.example.com"}, "https://APP.Example.COM", true},
		{[]string{"https://*.example.com"}, "https://example.com", false},
		{[]string{"https://*.example.com"}, "https://evilexample.com", false},
		{[]string{"https://*.example.com"}, "https://app.example.com.evil", false},
		{[]string{"https://*.example.com"}, "http://app.example.com", false},
		{[]string{"https://*.example.com:8443"}, "https://app.example.com", false},
		{[]string{"https://*.example.com:8443"}, "https://app.example.com:8443", true},
		{[]string{"https://*"}, "https://anything.at.all", true},
		{[]string{"https://a*b*c.com"}, "https://aXbYbZc.com", true},
		{[]string{"https://a*b*c.com"}, "https://aXcYb.com", false},
		{[]string{"http://192.168.1.*"}, "http://192.168.1.20", true},
		// IPv6
		{[]string{"http://[::1]:3000"}, "http://[::1]:3000", true},
		{[]string{"http://[::1]"}, "http://[::1]", true},
		{[]string{"http://[::1]"}, "http://[0::1]", true},
		{[]string{"http://[::1]"}, "http://[::2]", false},
		{[]string{"http://[::1]"}, "http://[fe80::1%25eth0]", false},
		{[]string{"http://[::ffff:1.2.3.4]"}, "http://[::ffff:102:304]", true},
		// "*", and headers that are not origins
		{[]string{"*"}, "https://anything.example", true},
		{[]string{"*"}, "null", false},
		{[]string{"*"}, "", false},
		{[]string{"*"}, "example.com", false},
		{[]string{"*"}, "https://[::1", false},
		{[]string{"https://example.com"}, "null", false},
		{[]string{"https://example.com"}, "example.com", false},
		{[]string{"https://example.com"}, "https://", false},
		{[]string{"https://example.com"}, "https://exa mple.com", false},
		{[]string{"https://example.com"}, "https://example.com:https", false},
		// net/url's leniency, which the router has always had
		{[]string{"https://example.com"}, "https://example.com/", true},
		{[]string{"https://example.com"}, "https://user@example.com/x?y", true},
		// several patterns
		{[]string{"https://a.com", "https://b.com"}, "https://b.com", true},
		{[]string{"https://a.com", "https://b.com"}, "https://c.com", false},
		{nil, "https://a.com", false},
	}
	for _, c := range cases {
		var ps []Pattern
		for _, s := range c.patterns {
			p, err := Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		if got := Match(ps, c.origin); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.patterns, c.origin, got, c.want)
		}
	}
}

// The router's matcher before this package, kept to show that for every
// pattern whose normal form is what the config produced before (lower-cased
// input), the new matcher agrees on every header.
type oldPattern struct {
	any                bool
	scheme, host, port string
}

func oldParse(s string) oldPattern {
	if s == "*" {
		return oldPattern{any: true}
	}
	scheme, rest, _ := strings.Cut(s, "://")
	host, port := rest, ""
	if h, p, err := net.SplitHostPort(rest); err == nil {
		host, port = h, p
	}
	return oldPattern{scheme: strings.ToLower(scheme), host: strings.ToLower(host), port: port}
}

func oldAllowed(origins []oldPattern, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	for _, p := range origins {
		if p.any {
			return true
		}
		if p.scheme != scheme || p.port != port {
			continue
		}
		if ok, _ := path.Match(p.host, host); ok {
			return true
		}
	}
	return false
}

func TestSameAsBefore(t *testing.T) {
	t.Parallel()
	patterns := []string{"*", "https://example.com", "https://*.example.com", "https://*.example.com:8443",
		"http://localhost:3000", "https://a*b*c.com", "https://*", "http://[::1]:3000", "chrome-extension://abc",
		"http://192.168.1.*", "https://*example.com", "https://**.com"}
	headers := []string{"", "null", "example.com", "https://example.com", "HTTPS://Example.com", "http://example.com",
		"https://example.com:443", "https://example.com:", "https://example.com/", "https://u@example.com",
		"https://a.example.com", "https://a.b.example.com:8443", "https://A.example.com:8443", "https://example.com:8443",
		"http://localhost:3000", "http://LOCALHOST:3000", "http://localhost", "https://abc.com", "https://aXbYc.com",
		"https://ac.com", "http://[::1]:3000", "http://[::1]", "chrome-extension://abc", "chrome-extension://ABC",
		"http://192.168.1.7", "https://evilexample.com", "https://x.com", "https://[::1", "//example.com",
		"https://exa%C3%A9mple.com", "https://%41.example.com", "https://a.example.com:0443"}
	for _, s := range patterns {
		p, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.String() != strings.ToLower(s) {
			t.Fatalf("%q normalised to %q: not a like-for-like case", s, p)
		}
		for _, h := range headers {
			if got, want := Match([]Pattern{p}, h), oldAllowed([]oldPattern{oldParse(s)}, h); got != want {
				t.Errorf("pattern %q, Origin %q: Match = %v, before %v", s, h, got, want)
			}
		}
	}
}

func TestMatchAllocs(t *testing.T) {
	ps := []Pattern{}
	for _, s := range []string{"https://app.example.com", "https://*.example.org", "http://[::1]:3000"} {
		p, _ := Parse(s)
		ps = append(ps, p)
	}
	for _, h := range []string{"https://a.b.example.org", "HTTPS://EVIL.EXAMPLE.COM", "http://[::1]:3000"} {
		got := testing.AllocsPerRun(100, func() { Match(ps, h) })
		before := testing.AllocsPerRun(100, func() { url.Parse(h) })
		if got > before {
			t.Errorf("Match(%q) allocates %v times, url.Parse alone %v", h, got, before)
		}
	}
}

// FuzzSameAsBefore: a parsed pattern reparses to itself, and where the
// normal form is the lower-cased input (as config produced before), Match
// agrees with the old matcher on ASCII headers without escapes. (On non-ASCII hosts the old
// matcher's Unicode lower-casing folded "\u212a" (Kelvin) to "k"; browsers
// send hosts in ASCII.)
func FuzzSameAsBefore(f *testing.F) {
	f.Add("https://*.example.com", "https://a.b.example.com")
	f.Add("http://a*b:8080", "http://AxB:8080/")
	f.Add("*", "null")
	f.Fuzz(func(t *testing.T, pattern, header string) {
		p, err := Parse(pattern)
		if err != nil {
			return
		}
		if q, err := Parse(p.String()); err != nil || q != p {
			t.Fatalf("Parse(%q) = %#v, %v; want %#v", p.String(), q, err, p)
		}
		got := Match([]Pattern{p}, header)
		if p.String() != strings.ToLower(pattern) || p.ip.IsValid() {
			return
		}
		for i := 0; i < len(header); i++ {
			if header[i] >= 0x80 || header[i] == '%' {
				return
			}
		}
		if want := oldAllowed([]oldPattern{oldParse(pattern)}, header); got != want {
			t.Fatalf("pattern %q, Origin %q: Match = %v, before %v", pattern, header, got, want)
		}
	})
}
