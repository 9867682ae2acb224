package moonwire_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/internal/webui"
	"github.com/moonwire/moonwire/router/config"
)

const consoleEcho = `local M = {}
function M.on_message(conn, data, kind) conn:send(data, kind) end
return M
`

// consoleConfig is a config with an echo route (messages of at most 16
// bytes, so the browser test can provoke a 1009) and extra [server] keys.
func consoleConfig(server string) map[string]string {
	return moontest.Files("[server]\n"+server+"\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\nmax_message_size = 16\n\n"+
		"[[routes]]\npath = \"/rooms/{room}\"\nscript = \"echo.lua\"\n", "scripts/echo.lua", consoleEcho)
}

type consoleResult struct {
	status int
	header http.Header
	body   []byte
}

func consoleDo(t *testing.T, method, url string, hdr map[string]string) consoleResult {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: moontest.Timeout}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return consoleResult{res.StatusCode, res.Header, body}
}

// TestConsoleOffByDefault: without the keys, neither the console nor the
// client is served: the paths are as unknown as any other.
func TestConsoleOffByDefault(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, consoleConfig(""))
	for _, p := range []string{"/_console", "/_console/", "/_console/console.js", "/_console/routes.json", "/_moonwire.js"} {
		if r := consoleDo(t, "GET", s.HTTPURL(p), nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
}

// TestConsoleClientJS: client_js alone serves moonwire.js, as JavaScript, with a
// validator (304 on a match), to any origin; not the console; and only to
// GET and HEAD.
func TestConsoleClientJS(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, consoleConfig("client_js = true"))
	r := consoleDo(t, "GET", s.HTTPURL("/_moonwire.js"), nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, webui.ClientJS) {
		t.Fatalf("GET /_moonwire.js: %d, %d bytes; want 200 and the %d bytes of moonwire.js", r.status, len(r.body), len(webui.ClientJS))
	}
	for k, want := range map[string]string{
		"Content-Type":                "text/javascript; charset=utf-8",
		"Cache-Control":               "no-cache",
		"X-Content-Type-Options":      "nosniff",
		"Access-Control-Allow-Origin": "*",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	etag := r.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if r := consoleDo(t, "GET", s.HTTPURL("/_moonwire.js"), map[string]string{"If-None-Match": etag}); r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("revalidation: %d with %d bytes, want 304 and none", r.status, len(r.body))
	}
	if r := consoleDo(t, "HEAD", s.HTTPURL("/_moonwire.js"), nil); r.status != http.StatusOK || r.header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD: %d %q", r.status, r.header.Get("Content-Type"))
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if r := consoleDo(t, m, s.HTTPURL("/_moonwire.js"), nil); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d (Allow %q), want 405", m, r.status, r.header.Get("Allow"))
		}
	}
	for _, p := range []string{"/_console", "/_moonwire.js/", "/_moonwire.jsx", "/_MOONWIRE.js"} {
		if r := consoleDo(t, "GET", s.HTTPURL(p), nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
}

// TestConsoleServed: the page, its script and style and the route list,
// each with its type and the page with its content security policy; the
// client comes with the console; the static folder still serves the rest.
func TestConsoleServed(t *testing.T) {
	t.Parallel()
	files := consoleConfig("console = true\nstatic_dir = \"www\"")
	files["www/index.html"] = "home"
	s := moontest.Start(t, files)
	for p, ctype := range map[string]string{
		"/_console":             "text/html; charset=utf-8",
		"/_console/":            "text/html; charset=utf-8",
		"/_console/console.js":  "text/javascript; charset=utf-8",
		"/_console/console.css": "text/css; charset=utf-8",
		"/_console/routes.json": "application/json",
		"/_moonwire.js":         "text/javascript; charset=utf-8",
	} {
		r := consoleDo(t, "GET", s.HTTPURL(p), nil)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", p, r.status, r.header.Get("Content-Type"), ctype)
		}
		if strings.HasPrefix(p, "/_console") && !strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", p, r.header.Get("Content-Security-Policy"))
		}
	}
	var routes []map[string]string
	if err := json.Unmarshal(consoleDo(t, "GET", s.HTTPURL("/_console/routes.json"), nil).body, &routes); err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0]["path"] != "/echo" || routes[1]["path"] != "/rooms/{room}" || routes[0]["script"] != "echo.lua" {
		t.Errorf("routes.json: %v", routes)
	}
	if r := consoleDo(t, "GET", s.HTTPURL("/_console/../../etc/passwd"), nil); r.status == http.StatusOK && bytes.Contains(r.body, []byte("root:")) {
		t.Errorf("path traversal served a file")
	}
	for _, p := range []string{"/_console/nope", "/_console/console.html", "/_console/.git"} {
		if r := consoleDo(t, "GET", s.HTTPURL(p), nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	if r := consoleDo(t, "POST", s.HTTPURL("/_console"), nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /_console: %d, want 405", r.status)
	}
	if r := consoleDo(t, "GET", s.HTTPURL("/"), nil); r.status != http.StatusOK || string(r.body) != "home" {
		t.Errorf("static: %d %q", r.status, r.body)
	}
}

// TestConsoleRefusesForeignHost: a page under another name that resolves
// to 127.0.0.1 (DNS rebinding) does not get the console; loopback names
// do.
func TestConsoleRefusesForeignHost(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, consoleConfig("console = true"))
	for host, want := range map[string]int{
		"evil.example":           http.StatusForbidden,
		"evil.example:80":        http.StatusForbidden,
		"127.0.0.1.evil.example": http.StatusForbidden,
		"localhost":              http.StatusOK,
		"app.localhost:1234":     http.StatusOK,
		"127.0.0.1":              http.StatusOK,
		"[::1]:8765":             http.StatusOK,
	} {
		if r := consoleDo(t, "GET", s.HTTPURL("/_console/routes.json"), map[string]string{"Host": host}); r.status != want {
			t.Errorf("Host %q: %d, want %d", host, r.status, want)
		}
	}
	// The client is a public file: any host name gets it.
	if r := consoleDo(t, "GET", s.HTTPURL("/_moonwire.js"), map[string]string{"Host": "evil.example"}); r.status != http.StatusOK {
		t.Errorf("/_moonwire.js with a foreign Host: %d", r.status)
	}
}

// TestConsoleRefusedOnPublicListen: a node whose config puts the console
// on an address other hosts can reach does not start; the force key lets
// it.
func TestConsoleRefusedOnPublicListen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(server string) string {
		for name, content := range consoleConfig(server) {
			p := dir + "/" + name
			if err := os.MkdirAll(p[:strings.LastIndex(p, "/")], 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir + "/moonwire.toml"
	}
	_, err := config.Load(write("listen = \"0.0.0.0:0\"\nconsole = true"))
	if err == nil || !strings.Contains(err.Error(), "server.console: refused on \"0.0.0.0:0\"") {
		t.Fatalf("error %v, want server.console refused", err)
	}
	cfg, err := config.Load(write("listen = \"0.0.0.0:0\"\nconsole = true\nconsole_public = true"))
	if err != nil {
		t.Fatal(err)
	}
	s := moontest.StartConfig(t, cfg)
	// Forced: no loopback check either, any Host gets it.
	if r := consoleDo(t, "GET", s.HTTPURL("/_console"), map[string]string{"Host": "moonwire.example"}); r.status != http.StatusOK {
		t.Errorf("forced console: %d", r.status)
	}
}

// TestConsoleReload: the keys apply live: a reload turns the console on,
// its route list follows the config, and another reload turns it off.
func TestConsoleReload(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, consoleConfig(""))
	if r := consoleDo(t, "GET", s.HTTPURL("/_console"), nil); r.status != http.StatusNotFound {
		t.Fatalf("before: %d, want 404", r.status)
	}
	on := consoleConfig("console = true")["moonwire.toml"] + "\n[[routes]]\npath = \"/late\"\nscript = \"echo.lua\"\n"
	s.WriteFile(t, "moonwire.toml", on)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := consoleDo(t, "GET", s.HTTPURL("/_console/routes.json"), nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"/late"`) {
		t.Errorf("after turning it on: %d %s", r.status, r.body)
	}
	s.WriteFile(t, "moonwire.toml", consoleConfig("")["moonwire.toml"])
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/_console", "/_moonwire.js"} {
		if r := consoleDo(t, "GET", s.HTTPURL(p), nil); r.status != http.StatusNotFound {
			t.Errorf("after turning it off: GET %s: %d, want 404", p, r.status)
		}
	}
}
