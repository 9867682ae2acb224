package moonwire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/moonwire/moonwire/internal/webui"
	"github.com/moonwire/moonwire/router/config"
)

// The paths of the browser-side files. They start with "/_" so that they
// do not collide with a static site's own files; a route with the same
// path would still win (routes are looked up first).
const (
	clientJSPath = "/_moonwire.js"
	consolePath  = "/_console"
)

// consoleCSP confines the console page to its own files: scripts and
// styles from this server only (no inline code, no CDN), WebSocket
// connections anywhere (the user types the URL), nothing else.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file with what serving it needs; built once, since
// the files never change while the binary runs.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

func newAsset(body []byte, ctype string) asset {
	sum := sha256.Sum256(body)
	return asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

var (
	clientJSAsset = newAsset(webui.ClientJS, "text/javascript; charset=utf-8")
	consoleAssets = map[string]asset{
		consolePath:                  mustAsset("console.html", "text/html; charset=utf-8"),
		consolePath + "/":            mustAsset("console.html", "text/html; charset=utf-8"),
		consolePath + "/console.js":  mustAsset("console.js", "text/javascript; charset=utf-8"),
		consolePath + "/console.css": mustAsset("console.css", "text/css; charset=utf-8"),
	}
)

func mustAsset(name, ctype string) asset {
	b, err := fs.ReadFile(webui.Console, name)
	if err != nil {
		panic("webui: " + name + " is not embedded: " + err.Error()) // a build mistake, caught by any test
	}
	return newAsset(b, ctype)
}

// serve answers GET and HEAD with the asset. ETag with no-cache: a
// browser revalidates every time and gets a 304 until the binary changes,
// so an upgraded server never serves a stale client from a cache.
func (a asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// consoleRoute is one entry of /_console/routes.json.
type consoleRoute struct {
	Path   string `json:"path"`
	Script string `json:"script"`
}

// consoleHTTP puts the dev console and /_moonwire.js in front of next (the
// static files, or nil) when cfg asks for them; otherwise it returns next
// unchanged, so a server without them serves plain HTTP exactly as
// before. It is rebuilt with every reload, so the keys apply live and the
// route list is the running config's.
func consoleHTTP(cfg *config.Config, next http.Handler) http.Handler {
	c := cfg.Server.Console
	if !c.Enabled && !c.ClientJS {
		return next
	}
	if next == nil {
		next = http.NotFoundHandler()
	}
	routes := make([]consoleRoute, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		routes = append(routes, consoleRoute{Path: rc.Path, Script: rc.Script})
	}
	routesJSON, err := json.Marshal(routes)
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	routesAsset := newAsset(routesJSON, "application/json")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		isClient := c.ClientJS && p == clientJSPath
		isConsole := c.Enabled && (p == consolePath || strings.HasPrefix(p, consolePath+"/"))
		if !isClient && !isConsole {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if isClient {
			// A public file: any page may import it as a module, which a
			// cross-origin <script type=module> does only with CORS.
			w.Header().Set("Access-Control-Allow-Origin", "*")
			clientJSAsset.serve(w, r)
			return
		}
		if !c.Public && !localRequest(r) {
			http.Error(w, "the dev console is served only to this machine (see server.console_public)", http.StatusForbidden)
			return
		}
		a, ok := consoleAssets[p]
		if p == consolePath+"/routes.json" {
			a, ok = routesAsset, true
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		a.serve(w, r)
	})
}

// localRequest reports whether a request reached a loopback address and
// names a loopback host. The config check refuses a console on a
// non-loopback server.listen, but the listen address can also come from
// the -listen flag, so this is checked again per request; and the Host
// check defeats DNS rebinding, where a web page under an attacker's
// domain resolved to 127.0.0.1 would otherwise read the route list as
// same-origin.
func localRequest(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := la.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
