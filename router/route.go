package router

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Laner is a Handler that runs on a fixed number of lanes, such as a
// scripted route with one Lua VM per lane: the router asks it rather than
// being told the count twice.
type Laner interface {
	Lanes() int
}

// RouteSpec configures one route.
type RouteSpec struct {
	// Pattern is an exact path ("/echo") or one with whole-segment
	// parameters ("/rooms/{room}").
	Pattern string
	Handler Handler
	// Lanes is the number of serial executors (Lua VMs). 0: the
	// handler's own count when it has one (a Laner: one lane per Lua VM),
	// else 1. A count that disagrees with the handler's is an error.
	Lanes int
	// Heartbeat overrides Config.Heartbeat when non-zero.
	Heartbeat Heartbeat
	// MaxMessageSize overrides Config.MaxMessageSize when non-zero.
	MaxMessageSize int64
	// RateLimit, when set, closes a connection that sends faster (1008).
	RateLimit *RateLimit
	// MaxConnectionsPerIP refuses upgrades from one address past this count
	// with HTTP 429; 0 means no limit.
	MaxConnectionsPerIP int
	// Key distinguishes routes that share a pattern across
	// reconfigurations: a route whose Key changes (moonwire uses the script
	// path) is removed and added, not updated.
	Key string
}

// Heartbeat is the ping/timeout policy of a route.
type Heartbeat struct {
	// Interval: a connection quiet this long is pinged.
	Interval time.Duration
	// Timeout: a connection silent this long is closed 1001.
	Timeout time.Duration
}

// RateLimit is a token bucket per connection: Messages per Per, with bursts
// of up to Burst messages.
type RateLimit struct {
	Messages int
	Per      time.Duration
	Burst    int
}

// Route is a route's runtime, handed to its Handler at Start. It outlives
// reconfigurations that keep its pattern: its lanes, connections and
// counters stay, while its spec and handler may be replaced.
type Route struct {
	srv     *Server
	pattern pattern
	lanes   []*lane
	next    atomic.Uint32 // round-robin lane assignment

	spec    atomic.Pointer[RouteSpec] // normalised; replaced by Reconfigure
	handler atomic.Pointer[handlerBox]
	retired atomic.Bool // removed from the table; its connections are closing

	conns             atomic.Int64 // open connections
	pendingHandshakes atomic.Int64 // upgrades in progress on this route

	// Counters over the route's life. Connections add to them as traffic
	// flows, so a scrape reads them without walking connections.
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Int64
	handshakes                         atomic.Int64

	ipMu  sync.Mutex
	perIP map[string]int
}

// handlerBox lets a Handler (an interface) live in an atomic.Pointer.
type handlerBox struct{ h Handler }

// Pattern returns the route's path pattern.
func (rt *Route) Pattern() string { return rt.spec.Load().Pattern }

// Spec returns the route's current spec, defaults applied.
func (rt *Route) Spec() RouteSpec { return *rt.spec.Load() }

// Handler returns the route's current handler.
func (rt *Route) Handler() Handler { return rt.handler.Load().h }

// Lanes returns the number of lanes.
func (rt *Route) Lanes() int { return len(rt.lanes) }

// Server returns the server the route belongs to.
func (rt *Route) Server() *Server { return rt.srv }

// Connections returns the number of open connections on the route.
func (rt *Route) Connections() int64 { return rt.conns.Load() }

// Post runs fn on lane i after the events already queued there. It reports
// false when the route has stopped and fn will not run.
func (rt *Route) Post(i int, fn func()) bool {
	return rt.lanes[i].push(task{kind: taskFunc, fn: fn})
}

// acquireIP counts a connection from ip against MaxConnectionsPerIP. It
// reports whether the connection may proceed and whether it was counted
// (and so must be released).
func (rt *Route) acquireIP(ip string) (ok, counted bool) {
	limit := rt.spec.Load().MaxConnectionsPerIP
	if limit <= 0 {
		return true, false
	}
	rt.ipMu.Lock()
	defer rt.ipMu.Unlock()
	if rt.perIP[ip] >= limit {
		return false, false
	}
	if rt.perIP == nil {
		rt.perIP = make(map[string]int)
	}
	rt.perIP[ip]++
	return true, true
}

// releaseIP undoes a counted acquireIP. Counting is recorded per
// connection, not re-derived from the spec, so a limit changed by a
// reload cannot unbalance the map.
func (rt *Route) releaseIP(ip string) {
	rt.ipMu.Lock()
	defer rt.ipMu.Unlock()
	if n := rt.perIP[ip] - 1; n > 0 {
		rt.perIP[ip] = n
	} else {
		delete(rt.perIP, ip)
	}
}

// RouteStats is a snapshot of one route's counters.
type RouteStats struct {
	Pattern     string
	Connections int64
	Handshakes  int64 // upgrades accepted
	MessagesIn  int64
	MessagesOut int64
	BytesIn     int64 // on the wire, frame headers included
	BytesOut    int64
}

// Stats returns the route's counters.
func (rt *Route) Stats() RouteStats {
	return RouteStats{
		Pattern:     rt.Pattern(),
		Connections: rt.conns.Load(),
		Handshakes:  rt.handshakes.Load(),
		MessagesIn:  rt.msgsIn.Load(),
		MessagesOut: rt.msgsOut.Load(),
		BytesIn:     rt.bytesIn.Load(),
		BytesOut:    rt.bytesOut.Load(),
	}
}

// pattern is a parsed route path: literal segments and {name} parameters.
type pattern struct {
	segs   []string // literal text, or "" for a parameter
	params []string // parameter name per segment ("" for literals)
	nparam int
}

func parsePattern(p string) (pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return pattern{}, fmt.Errorf("path %q must start with /", p)
	}
	var pt pattern
	seen := map[string]bool{}
	for _, s := range strings.Split(p[1:], "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name := s[1 : len(s)-1]
			if name == "" || seen[name] {
				return pattern{}, fmt.Errorf("path %q: bad or repeated parameter %q", p, s)
			}
			seen[name] = true
			pt.segs = append(pt.segs, "")
			pt.params = append(pt.params, name)
			pt.nparam++
			continue
		}
		if strings.ContainsAny(s, "{}") {
			return pattern{}, fmt.Errorf("path %q: a parameter must be a whole segment", p)
		}
		pt.segs = append(pt.segs, s)
		pt.params = append(pt.params, "")
	}
	return pt, nil
}

func (pt *pattern) literals() int { return len(pt.segs) - pt.nparam }

// match reports whether path matches and, for patterns with parameters,
// returns their values. Parameter values must be non-empty.
func (pt *pattern) match(path string) (map[string]string, bool) {
	if len(path) == 0 || path[0] != '/' {
		return nil, false
	}
	rest := path[1:]
	var params map[string]string
	for i, lit := range pt.segs {
		j := strings.IndexByte(rest, '/')
		var seg string
		if i == len(pt.segs)-1 {
			if j >= 0 {
				return nil, false
			}
			seg = rest
		} else {
			if j < 0 {
				return nil, false
			}
			seg, rest = rest[:j], rest[j+1:]
		}
		if name := pt.params[i]; name != "" {
			if seg == "" {
				return nil, false
			}
			if v, err := url.PathUnescape(seg); err == nil {
				seg = v
			}
			if params == nil {
				params = make(map[string]string, pt.nparam)
			}
			params[name] = seg
		} else if seg != lit {
			return nil, false
		}
	}
	return params, true
}

func newRouteTable() *routeTable { return &routeTable{exact: make(map[string]*Route)} }

// add appends rt, refusing a second route with the same exact path.
func (t *routeTable) add(rt *Route) error {
	if rt.pattern.nparam == 0 {
		if _, dup := t.exact[rt.Pattern()]; dup {
			return fmt.Errorf("route %s: duplicate path", rt.Pattern())
		}
		t.exact[rt.Pattern()] = rt
	} else {
		t.params = append(t.params, rt)
	}
	t.all = append(t.all, rt)
	return nil
}

// byPattern finds a route by its pattern as written.
func (t *routeTable) byPattern(p string) *Route {
	for _, rt := range t.all {
		if rt.Pattern() == p {
			return rt
		}
	}
	return nil
}

// routeTable matches paths to routes. Exact patterns win over patterns with
// parameters; among the latter, the one with the most literal segments
// wins, then the first declared.
type routeTable struct {
	exact  map[string]*Route
	params []*Route
	all    []*Route
}

func (t *routeTable) lookup(path string) (*Route, map[string]string) {
	if rt, ok := t.exact[path]; ok {
		return rt, nil
	}
	var best *Route
	var bestParams map[string]string
	for _, rt := range t.params {
		if best != nil && rt.pattern.literals() <= best.pattern.literals() {
			continue
		}
		if p, ok := rt.pattern.match(path); ok {
			best, bestParams = rt, p
		}
	}
	return best, bestParams
}
