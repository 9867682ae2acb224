package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// source says where a config came from and therefore how its relative
// paths resolve: against an OS folder (dir) or inside a filesystem (fsys,
// fsDir).
type source struct {
	file  string
	dir   string // absolute OS folder of the file; "" when fsys is set
	fsys  fs.FS
	fsDir string // folder of the file inside fsys ("." for the root)
}

// loader collects every problem of one parse; checks record errors and
// carry on with the default so that later checks still run.
type loader struct {
	src  source
	md   toml.MetaData
	errs []*Error
	skip map[string]bool // keys whose value had the wrong shape; nothing below them is reported as unknown

	scriptsName string // the scripts folder as shown in messages
}

// parse decodes and validates data. It is the single place both Load and
// LoadFS (and the fuzzer) go through.
func parse(data []byte, src source) (*Config, error) {
	// Two decodes of the same text: the tree keeps exact keys, types and
	// route order for shape checks and for locating unknown keys; the typed
	// decode is what marks known keys as decoded.
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return nil, Errors{syntaxError(src.file, err)}
	}
	var raw rawFile
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return nil, Errors{syntaxError(src.file, err)}
	}
	l := &loader{src: src, md: md, skip: map[string]bool{}}
	c := &Config{File: src.file, Dir: src.dir}

	var (
		srv    rawServer
		hb     rawHeartbeat
		scr    rawScripts
		adm    rawAdmin
		brk    rawBroker
		sto    rawStore
		routes []toml.Primitive
	)
	l.table(tree, "server", raw.Server, &srv)
	l.table(tree, "heartbeat", raw.Heartbeat, &hb)
	l.table(tree, "scripts", raw.Scripts, &scr)
	l.table(tree, "admin", raw.Admin, &adm)
	l.table(tree, "broker", raw.Broker, &brk)
	l.table(tree, "store", raw.Store, &sto)
	routeItems, routeTrees, hasRoutes := l.routeList(tree, raw.Routes, &routes)

	l.server(&c.Server, &srv)
	hbOK := l.heartbeat(&c.Heartbeat, &hb)
	l.scripts(&c.Scripts, &scr)
	c.Warnings = l.admin(&c.Admin, &adm, c.Server.Listen)
	l.broker(&c.Broker, &brk)
	l.store(&c.Store, &sto, &c.Broker)
	l.api(tree, c, raw.API)
	l.httpClient(tree, c, raw.HTTP)
	l.history(c, raw.History)
	l.plugins(c, raw.Plugins, string(data))
	if hasRoutes {
		c.Routes = l.routes(c, routes, routeItems, routeTrees, hbOK)
	}

	// Unknown keys first: a misspelt key is usually why a value looks
	// missing or wrong further down.
	all := append(unknownKeys(&l.md, routeTrees, l.skip), l.errs...)
	if len(all) > 0 {
		for _, e := range all {
			e.File = src.file
		}
		return nil, Errors(all)
	}
	return c, nil
}

// errorf records a problem; a %w in format becomes the Error's cause.
func (l *loader) errorf(key, format string, args ...any) {
	err := fmt.Errorf(format, args...)
	l.errs = append(l.errs, &Error{Key: key, Msg: err.Error(), err: errors.Unwrap(err)})
}

func (l *loader) fail(key string, err error) {
	l.errs = append(l.errs, &Error{Key: key, Msg: err.Error(), err: err})
}

// table decodes the table at tree[key] into dst after checking that it is
// a table; absent tables leave dst zero (all defaults).
func (l *loader) table(tree map[string]any, key string, p toml.Primitive, dst any) bool {
	v, ok := tree[key]
	if !ok {
		return false
	}
	return l.decodeTable(key, v, p, dst)
}

func (l *loader) decodeTable(key string, v any, p toml.Primitive, dst any) bool {
	if _, ok := v.(map[string]any); !ok {
		l.skip[key] = true
		l.errorf(key, "must be a table, not %s", typeName(v))
		return false
	}
	if err := l.md.PrimitiveDecode(p, dst); err != nil {
		// Cannot happen with the raw structs (scalars never fail, tables are
		// Primitives), but a decoder error must never be lost.
		l.skip[key] = true
		l.fail(key, err)
		return false
	}
	return true
}

// routeList checks that routes is an array of tables and splits it.
func (l *loader) routeList(tree map[string]any, p toml.Primitive, dst *[]toml.Primitive) ([]any, []map[string]any, bool) {
	v, ok := tree["routes"]
	if !ok {
		l.errorf("routes", "at least one [[routes]] entry is required")
		return nil, nil, false
	}
	items, tables, ok := asArray(v)
	if !ok {
		l.skip["routes"] = true
		l.errorf("routes", "must be an array of tables ([[routes]]), not %s", typeName(v))
		return nil, nil, false
	}
	if len(items) == 0 {
		l.errorf("routes", "at least one [[routes]] entry is required")
		return nil, nil, false
	}
	if err := l.md.PrimitiveDecode(p, dst); err != nil || len(*dst) != len(items) {
		l.skip["routes"] = true
		l.errorf("routes", "must be an array of tables ([[routes]])")
		return nil, nil, false
	}
	return items, tables, true
}

// ---- typed readers: each reports a wrong type or value under key and
// leaves *dst (the default) alone; they return whether *dst was set.

func (l *loader) str(key string, x value, dst *string) bool {
	if !x.set {
		return false
	}
	s, ok := x.v.(string)
	if !ok {
		l.errorf(key, "must be a string, not %s", typeName(x.v))
		return false
	}
	*dst = s
	return true
}

func (l *loader) boolean(key string, x value, dst *bool) bool {
	if !x.set {
		return false
	}
	b, ok := x.v.(bool)
	if !ok {
		l.errorf(key, "must be true or false, not %s", typeName(x.v))
		return false
	}
	*dst = b
	return true
}

// count reads an integer >= 0 (0 usually meaning "no limit" or "default").
func (l *loader) count(key string, x value, dst *int) bool {
	if !x.set {
		return false
	}
	n, ok := x.v.(int64)
	switch {
	case !ok:
		l.errorf(key, "must be an integer, not %s", typeName(x.v))
	case n < 0:
		l.errorf(key, "must not be negative, got %d", n)
	case n > math.MaxInt32:
		l.errorf(key, "%d is too large", n)
	default:
		*dst = int(n)
		return true
	}
	return false
}

// positiveSize reads a byte limit that must be > 0.
func (l *loader) positiveSize(key string, x value, dst *int64) bool {
	if !x.set {
		return false
	}
	n, err := sizeValue(x.v)
	if err != nil {
		l.fail(key, err)
		return false
	}
	if n == 0 {
		l.errorf(key, "must be greater than 0")
		return false
	}
	*dst = n
	return true
}

// positiveDuration reads a duration that must be > 0.
func (l *loader) positiveDuration(key string, x value, dst *time.Duration) bool {
	if !x.set {
		return false
	}
	d, err := durationValue(x.v)
	if err != nil {
		l.fail(key, err)
		return false
	}
	if d <= 0 {
		l.errorf(key, "must be greater than 0, got %s", d)
		return false
	}
	*dst = d
	return true
}

// ---- sections

func (l *loader) server(s *Server, r *rawServer) {
	*s = Server{
		Listen:           "127.0.0.1:8765",
		MaxMessageSize:   1 << 20,
		HandshakeTimeout: 5 * time.Second,
		WriteQueue:       1 << 20,
		SlowConsumer:     "close",
		DrainTimeout:     10 * time.Second,
		WriteTimeout:     10 * time.Second,
	}
	if l.str("server.listen", r.Listen, &s.Listen) {
		if err := checkAddr(s.Listen); err != nil {
			l.fail("server.listen", err)
		}
	}

	var cert, key string
	certOK := !r.TLSCert.set || l.str("server.tls_cert", r.TLSCert, &cert)
	keyOK := !r.TLSKey.set || l.str("server.tls_key", r.TLSKey, &key)
	switch {
	case !certOK || !keyOK:
		// a wrong type is reported; "both or neither" would only repeat it
	case cert != "" && key == "":
		l.errorf("server.tls_key", "required when server.tls_cert is set")
	case key != "" && cert == "":
		l.errorf("server.tls_cert", "required when server.tls_key is set")
	}
	if cert != "" {
		s.TLSCert = l.osFile("server.tls_cert", cert)
	}
	if key != "" {
		s.TLSKey = l.osFile("server.tls_key", key)
	}

	var static string
	if l.str("server.static_dir", r.StaticDir, &static) && static != "" {
		s.StaticDir, s.StaticFS, _ = l.folder("server.static_dir", static)
		if l.src.fsys != nil {
			s.StaticDir = static
		}
	}

	if r.AllowedOrigins.set {
		list, ok := r.AllowedOrigins.v.([]any)
		if !ok {
			l.errorf("server.allowed_origins", "must be an array of strings, not %s", typeName(r.AllowedOrigins.v))
		}
		for i, e := range list {
			key := "server.allowed_origins[" + strconv.Itoa(i) + "]"
			o, ok := e.(string)
			if !ok {
				l.errorf(key, "must be a string, not %s", typeName(e))
				continue
			}
			norm, err := checkOrigin(o)
			if err != nil {
				l.fail(key, err)
				continue
			}
			s.AllowedOrigins = append(s.AllowedOrigins, norm)
		}
	}

	l.positiveSize("server.max_message_size", r.MaxMessageSize, &s.MaxMessageSize)
	l.count("server.max_connections", r.MaxConnections, &s.MaxConnections)
	l.positiveDuration("server.handshake_timeout", r.HandshakeTimeout, &s.HandshakeTimeout)
	l.positiveSize("server.write_queue", r.WriteQueue, &s.WriteQueue)
	if l.str("server.slow_consumer", r.SlowConsumer, &s.SlowConsumer) {
		if s.SlowConsumer != "close" && s.SlowConsumer != "drop" {
			l.errorf("server.slow_consumer", "must be \"close\" or \"drop\", not %q", s.SlowConsumer)
		}
	}
	l.positiveDuration("server.drain_timeout", r.DrainTimeout, &s.DrainTimeout)
	l.positiveDuration("server.write_timeout", r.WriteTimeout, &s.WriteTimeout)
	l.boolean("server.compression", r.Compression, &s.Compression)
	l.console(&s.Console, r, s.Listen)
}

// heartbeat reads [heartbeat]; it reports whether the result is usable as
// the base for route overrides.
func (l *loader) heartbeat(h *Heartbeat, r *rawHeartbeat) bool {
	*h = Heartbeat{Interval: 10 * time.Second, Timeout: 30 * time.Second}
	n := len(l.errs)
	iSet := l.positiveDuration("heartbeat.interval", r.Interval, &h.Interval)
	tSet := l.positiveDuration("heartbeat.timeout", r.Timeout, &h.Timeout)
	if len(l.errs) > n {
		return false
	}
	note := func(set bool) string {
		if set {
			return ""
		}
		return ", default"
	}
	errKey := "heartbeat.timeout"
	if iSet && !tSet {
		errKey = "heartbeat.interval"
	}
	return l.heartbeatOrder(*h, errKey, "heartbeat.interval", note(iSet), "heartbeat.timeout", note(tSet))
}

// heartbeatOrder checks timeout > interval, which an override of either
// side alone can break, so both keys are named. The error is filed under
// errKey: the key the user wrote, since that is the one to change.
func (l *loader) heartbeatOrder(h Heartbeat, errKey, iKey, iNote, tKey, tNote string) bool {
	if h.Timeout > h.Interval {
		return true
	}
	l.errorf(errKey, "%s (%s%s) must be greater than %s (%s%s)", tKey, h.Timeout, tNote, iKey, h.Interval, iNote)
	return false
}

func (l *loader) scripts(s *Scripts, r *rawScripts) {
	*s = Scripts{Reload: true, HandlerTimeout: time.Second, MemoryLimit: 1 << 30}
	dir := "scripts"
	if l.str("scripts.dir", r.Dir, &dir) && dir == "" {
		l.errorf("scripts.dir", "must not be empty")
	} else if dir != "" {
		s.Dir, s.FS, l.scriptsName = l.folder("scripts.dir", dir)
	}
	l.boolean("scripts.reload", r.Reload, &s.Reload)
	l.count("scripts.vms", r.VMs, &s.VMs)
	l.positiveDuration("scripts.handler_timeout", r.HandlerTimeout, &s.HandlerTimeout)
	s.MemoryLimitSet = r.MemoryLimit.set
	if r.MemoryLimit.set {
		// 0 is allowed here: it turns the limit off.
		if n, err := sizeValue(r.MemoryLimit.v); err != nil {
			l.fail("scripts.memory_limit", err)
		} else {
			s.MemoryLimit = n
		}
	}
}

func (l *loader) admin(a *Admin, r *rawAdmin, serverListen string) (warnings []string) {
	if l.str("admin.listen", r.Listen, &a.Listen) && a.Listen != "" {
		if err := checkAddr(a.Listen); err != nil {
			l.fail("admin.listen", err)
		} else if a.Listen == serverListen && !strings.HasSuffix(a.Listen, ":0") {
			l.errorf("admin.listen", "%q is also server.listen; the admin endpoints need their own port", a.Listen)
		}
	}
	l.str("admin.token", r.Token, &a.Token)
	l.boolean("admin.pprof_public", r.PprofPublic, &a.PprofPublic)
	public := a.Listen != "" && !loopback(a.Listen)
	if l.boolean("admin.pprof", r.Pprof, &a.Pprof) && a.Pprof {
		switch {
		case a.Listen == "":
			l.errorf("admin.pprof", "needs admin.listen: the profiler is served on the admin port")
		case public && !a.PprofPublic:
			l.errorf("admin.pprof", "refused on %q, which is not a loopback address: the profiler reads the process's memory and can load its CPU; "+
				"serve it on 127.0.0.1, or set admin.pprof_public = true (with admin.token) to force it", a.Listen)
		}
	}
	if public && a.Token == "" {
		warnings = append(warnings, fmt.Sprintf("admin.listen: %q is not a loopback address and admin.token is not set: "+
			"anyone who reaches it can read /metrics, /healthz and /routes, and the dashboard at / stays shut (403) until a token is set", a.Listen))
	}
	return warnings
}

// loopback reports whether a listen address is only reachable from this
// host: an IP loopback address or "localhost". An empty host listens on
// every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l *loader) store(st *Store, r *rawStore, b *Broker) {
	*st = Store{Kind: "memory", MaxBytes: 64 << 20, MaxKeys: 100_000, MaxValueSize: 1 << 20}
	kindOK := !r.Kind.set || l.str("store.kind", r.Kind, &st.Kind)
	if kindOK && !ValidName(st.Kind) {
		l.errorf("store.kind", "must be a store's name (\"memory\", \"redis\", \"nats\" or a plugin's), not %q", st.Kind)
		kindOK = false
	}
	urlSet := r.URL.set && l.str("store.url", r.URL, &st.URL)
	if kindOK && st.Kind != "memory" && !urlSet && b.Kind == st.Kind {
		st.URL = b.URL // the broker's server, by default
	}
	switch {
	case !kindOK || (r.URL.set && !urlSet):
	case st.Kind == "memory" && st.URL != "":
		l.errorf("store.url", "must be empty when store.kind is \"memory\"")
	case (st.Kind == "redis" || st.Kind == "nats") && st.URL == "":
		l.errorf("store.url", "required when store.kind is %q and broker.kind is not", st.Kind)
	case st.Kind == "redis" || st.Kind == "nats":
		if err := checkBrokerURL(st.Kind, st.URL); err != nil {
			l.fail("store.url", err)
		}
	}
	l.positiveSize("store.max_bytes", r.MaxBytes, &st.MaxBytes)
	if l.count("store.max_keys", r.MaxKeys, &st.MaxKeys) && st.MaxKeys == 0 {
		l.errorf("store.max_keys", "must be greater than 0")
	}
	valueSet := l.positiveSize("store.max_value_size", r.MaxValueSize, &st.MaxValueSize)
	if st.MaxValueSize > st.MaxBytes {
		if valueSet {
			l.errorf("store.max_value_size", "%d is more than store.max_bytes (%d): one value could fill the store", st.MaxValueSize, st.MaxBytes)
		} else {
			st.MaxValueSize = st.MaxBytes // the default shrinks to fit a small store
		}
	}
}

func (l *loader) broker(b *Broker, r *rawBroker) {
	*b = Broker{Kind: "memory", Prefix: "moonwire", Timeout: 5 * time.Second, Outbox: 10000, PresenceTTL: 15 * time.Second}
	if l.str("broker.prefix", r.Prefix, &b.Prefix) && !validPrefix(b.Prefix) {
		l.errorf("broker.prefix", "must be 1 to 64 letters, digits, '_' or '-', not %q", b.Prefix)
	}
	l.positiveDuration("broker.timeout", r.Timeout, &b.Timeout)
	if l.count("broker.outbox", r.Outbox, &b.Outbox) && (b.Outbox < 1 || b.Outbox > 1_000_000) {
		l.errorf("broker.outbox", "must be between 1 and 1000000, not %d", b.Outbox)
	}
	l.boolean("broker.start_degraded", r.StartDegraded, &b.StartDegraded)
	if l.positiveDuration("broker.presence_ttl", r.PresenceTTL, &b.PresenceTTL) && b.PresenceTTL < 300*time.Millisecond {
		l.errorf("broker.presence_ttl", "must be at least 300ms (it is refreshed every third of it), not %s", b.PresenceTTL)
	}
	kindOK := !r.Kind.set || l.str("broker.kind", r.Kind, &b.Kind)
	// Brokers are plugins: which kinds exist is the registry's to say,
	// when the server is built. The URL rules of the kinds this project
	// ships are checked here, with the rest of the file.
	if kindOK && !ValidName(b.Kind) {
		l.errorf("broker.kind", "must be a broker's name (\"memory\", \"redis\", \"nats\" or a plugin's), not %q", b.Kind)
		kindOK = false
	}
	urlOK := !r.URL.set || l.str("broker.url", r.URL, &b.URL)
	if !kindOK || !urlOK {
		return // the URL rules depend on both
	}
	switch {
	case b.Kind == "memory" && b.URL != "":
		l.errorf("broker.url", "must be empty when broker.kind is \"memory\" (set kind to \"redis\" or \"nats\" to use %q)", b.URL)
	case (b.Kind == "redis" || b.Kind == "nats") && b.URL == "":
		l.errorf("broker.url", "required when broker.kind is %q", b.Kind)
	case b.Kind == "redis" || b.Kind == "nats":
		if err := checkBrokerURL(b.Kind, b.URL); err != nil {
			l.fail("broker.url", err)
		}
	}
}

// validPrefix reports whether p can start a Redis key and a NATS subject
// token alike.
func validPrefix(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (l *loader) routes(c *Config, prims []toml.Primitive, items []any, trees []map[string]any, hbOK bool) []Route {
	out := make([]Route, 0, len(prims))
	type seen struct {
		index int
		path  string
	}
	paths := map[string]seen{}  // exact path -> first route
	shapes := map[string]seen{} // path with parameters erased -> first route
	vms := c.Scripts.VMs
	if vms == 0 {
		vms = runtime.NumCPU()
	}
	for i, p := range prims {
		key := "routes[" + strconv.Itoa(i) + "]"
		var rr rawRoute
		if !l.decodeTable(key, items[i], p, &rr) {
			continue
		}
		r := Route{
			Heartbeat:      c.Heartbeat,
			MaxMessageSize: c.Server.MaxMessageSize,
			VMs:            vms,
		}

		if !rr.Path.set {
			l.errorf(key+".path", "required")
		} else if l.str(key+".path", rr.Path, &r.Path) {
			shape, err := checkPattern(r.Path)
			switch {
			case err != nil:
				l.fail(key+".path", err)
			case paths[r.Path].path != "":
				l.errorf(key+".path", "duplicate path %q (also routes[%d])", r.Path, paths[r.Path].index)
			case shapes[shape].path != "":
				first := shapes[shape]
				l.errorf(key+".path", "%q matches the same requests as routes[%d].path %q", r.Path, first.index, first.path)
			default:
				paths[r.Path] = seen{i, r.Path}
				shapes[shape] = seen{i, r.Path}
			}
		}

		if !rr.Script.set {
			l.errorf(key+".script", "required")
		} else {
			var script string
			if l.str(key+".script", rr.Script, &script) {
				r.Script = l.script(key+".script", script, &c.Scripts)
			}
		}

		if v, ok := trees[i]["heartbeat"]; ok {
			var rh rawHeartbeat
			if l.decodeTable(key+".heartbeat", v, rr.Heartbeat, &rh) {
				l.routeHeartbeat(key, &r.Heartbeat, &rh, hbOK)
			}
		}

		l.positiveSize(key+".max_message_size", rr.MaxMessageSize, &r.MaxMessageSize)

		if v, ok := trees[i]["rate_limit"]; ok {
			var rl rawRateLimit
			if l.decodeTable(key+".rate_limit", v, rr.RateLimit, &rl) {
				r.RateLimit = l.rateLimit(key+".rate_limit", &rl)
			}
		}

		l.count(key+".max_connections_per_ip", rr.MaxConnectionsPerIP, &r.MaxConnectionsPerIP)
		if l.count(key+".vms", rr.VMs, &r.VMs) && r.VMs == 0 {
			r.VMs = runtime.NumCPU()
		}

		r.Modules = l.modules(key+".modules", rr.Modules)

		r.Settings = map[string]any{}
		if rr.Settings.set {
			if m, ok := rr.Settings.v.(map[string]any); ok {
				r.Settings = m
			} else {
				l.errorf(key+".settings", "must be a table, not %s", typeName(rr.Settings.v))
			}
		}
		out = append(out, r)
	}
	return out
}

// routeHeartbeat merges a route's heartbeat over the global one and checks
// the merged pair, naming where each value came from.
func (l *loader) routeHeartbeat(key string, h *Heartbeat, r *rawHeartbeat, baseOK bool) {
	n := len(l.errs)
	iSet := l.positiveDuration(key+".heartbeat.interval", r.Interval, &h.Interval)
	tSet := l.positiveDuration(key+".heartbeat.timeout", r.Timeout, &h.Timeout)
	// With a broken [heartbeat] the inherited side is meaningless and was
	// reported already.
	if len(l.errs) > n || (!iSet && !tSet) || (!baseOK && !(iSet && tSet)) {
		return
	}
	iKey, tKey := "heartbeat.interval", "heartbeat.timeout"
	if iSet {
		iKey = key + "." + iKey
	}
	if tSet {
		tKey = key + "." + tKey
	}
	errKey := tKey
	if !tSet {
		errKey = iKey
	}
	l.heartbeatOrder(*h, errKey, iKey, "", tKey, "")
}

func (l *loader) rateLimit(key string, r *rawRateLimit) *RateLimit {
	rl := &RateLimit{}
	n := len(l.errs)
	if !r.Messages.set {
		l.errorf(key+".messages", "required")
	} else if l.count(key+".messages", r.Messages, &rl.Messages) && rl.Messages == 0 {
		l.errorf(key+".messages", "must be greater than 0")
	}
	if !r.Per.set {
		l.errorf(key+".per", "required")
	} else {
		l.positiveDuration(key+".per", r.Per, &rl.Per)
	}
	if len(l.errs) > n {
		return nil
	}
	rl.Burst = rl.Messages
	if l.count(key+".burst", r.Burst, &rl.Burst) && rl.Burst < rl.Messages {
		l.errorf(key+".burst", "%d must be at least %s.messages (%d)", rl.Burst, key, rl.Messages)
	}
	return rl
}

// script validates a route's script path and checks that the file exists in
// the scripts folder. Paths are slash-separated on every OS because they
// name files inside an fs.FS.
func (l *loader) script(key, s string, scr *Scripts) string {
	switch {
	case s == "":
		l.errorf(key, "required")
		return ""
	case strings.Contains(s, `\`):
		l.errorf(key, "%q: use forward slashes", s)
		return ""
	case strings.HasPrefix(s, "/") || filepath.IsAbs(s):
		l.errorf(key, "%q: must be relative to scripts.dir", s)
		return ""
	case !strings.HasSuffix(s, ".lua"):
		l.errorf(key, "%q: must be a .lua file", s)
		return ""
	case strings.HasSuffix(s, "_test.lua"):
		// A test file (moonwire test) drives the server; served as a
		// route it would run with nothing to test.
		l.errorf(key, "%q: a _test.lua file holds tests for moonwire test, not a route script", s)
		return ""
	}
	clean := path.Clean(s)
	if !fs.ValidPath(clean) {
		l.errorf(key, "%q: must stay inside scripts.dir", s)
		return ""
	}
	if scr.FS == nil {
		return clean // scripts.dir is broken and already reported
	}
	fi, err := fs.Stat(scr.FS, clean)
	switch {
	case err != nil && os.IsNotExist(err):
		l.errs = append(l.errs, &Error{Key: key, Msg: fmt.Sprintf("%q not found in scripts dir %s", s, l.scriptsName), err: err})
	case err != nil:
		l.errs = append(l.errs, &Error{Key: key, Msg: fmt.Sprintf("%q in scripts dir %s: %v", s, l.scriptsName, unwrapPath(err)), err: err})
	case fi.IsDir():
		l.errorf(key, "%q in scripts dir %s is a directory", s, l.scriptsName)
	}
	return clean
}
