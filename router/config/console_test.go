package config

import (
	"strings"
	"testing"
)

// TestConsole: the console is off by default, refused on a listen address
// other hosts can reach unless forced, and brings /_moonwire.js with it;
// client_js alone is allowed anywhere (it is a public file).
func TestConsole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server string
		want   Console
		err    string
	}{
		{"", Console{}, ""},
		{"console = true", Console{Enabled: true, ClientJS: true}, ""},
		{"listen = \"[::1]:8765\"\nconsole = true", Console{Enabled: true, ClientJS: true}, ""},
		{"listen = \"localhost:8765\"\nconsole = true", Console{Enabled: true, ClientJS: true}, ""},
		{"listen = \"0.0.0.0:8765\"\nconsole = true", Console{}, `server.console: refused on "0.0.0.0:8765", which is not a loopback address`},
		{"listen = \":8765\"\nconsole = true", Console{}, `server.console: refused on ":8765"`},
		{"listen = \"10.1.2.3:8765\"\nconsole = true\nconsole_public = false", Console{}, `server.console: refused on "10.1.2.3:8765"`},
		{"listen = \":8765\"\nconsole = true\nconsole_public = true", Console{Enabled: true, Public: true, ClientJS: true}, ""},
		{"listen = \":8765\"\nclient_js = true", Console{ClientJS: true}, ""},
		{"listen = \":8765\"\nconsole = false", Console{}, ""},
		{"console = \"yes\"", Console{}, "server.console: must be true or false"},
		{"console_public = 1", Console{}, "server.console_public: must be true or false"},
		{"client_js = \"on\"", Console{}, "server.client_js: must be true or false"},
		{"consol = true", Console{}, `server.consol: unknown key`},
	} {
		_, file := fixture(t, "[server]\n"+tc.server+"\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n")
		c, err := Load(file)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.server, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.server, err)
			continue
		}
		if c.Server.Console != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.server, c.Server.Console, tc.want)
		}
	}
}
