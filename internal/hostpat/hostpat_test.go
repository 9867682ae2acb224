package hostpat

import "testing"

func TestMatch(t *testing.T) {
	pats := []Pattern{}
	for _, s := range []string{"api.example.com", "*.internal.example", "127.0.0.1:8080", "Any.Example.ORG:*", "[::1]:9000", "x.test:8443"} {
		p, err := Parse(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		pats = append(pats, p)
	}
	cases := []struct {
		scheme, host string
		port         int
		want         string // the pattern matched; "" for none
	}{
		{"https", "api.example.com", 443, "api.example.com"},
		{"http", "api.example.com", 80, "api.example.com"},
		{"https", "API.example.com.", 443, "api.example.com"},
		{"https", "api.example.com", 8443, ""}, // no port in the pattern: the default only
		{"http", "api.example.com", 443, ""},
		{"https", "evil-api.example.com", 443, ""},
		{"https", "api.example.com.evil", 443, ""},
		{"https", "a.internal.example", 443, "*.internal.example"},
		{"https", "a.b.internal.example", 443, "*.internal.example"},
		{"https", "internal.example", 443, ""}, // the wildcard is for subdomains
		{"https", "xinternal.example", 443, ""},
		{"http", "127.0.0.1", 8080, "127.0.0.1:8080"},
		{"http", "127.0.0.1", 8081, ""},
		{"http", "127.0.0.2", 8080, ""},
		{"http", "localhost", 8080, ""}, // a name that resolves there is not the address
		{"http", "any.example.org", 1234, "any.example.org:*"},
		{"http", "::1", 9000, "[::1]:9000"},
		{"http", "[::1]", 9000, "[::1]:9000"},
		{"https", "x.test", 8443, "x.test:8443"},
	}
	for _, tc := range cases {
		p, ok := Match(pats, tc.scheme, tc.host, tc.port)
		if got := map[bool]string{true: p.Text}[ok]; got != tc.want {
			t.Errorf("%s://%s:%d matched %q, want %q", tc.scheme, tc.host, tc.port, got, tc.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, s := range []string{"", "http://x.com", "x.com/path", "*.1.2.3.4", "x.com:0", "x.com:70000", "x.com:abc", "bad host", "a..b", "*"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}
