package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/moonwire/moonwire/internal/editdist"
)

// The raw* structs are the schema: their toml tags are the only keys that
// exist, and decoding into them is what lets MetaData.Undecoded report
// everything else. Scalars are captured as a value so a wrong type becomes
// one error for that key instead of aborting the whole decode; tables are
// Primitives so they are decoded only after their shape has been checked.

type rawFile struct {
	Server    toml.Primitive `toml:"server"`
	Heartbeat toml.Primitive `toml:"heartbeat"`
	Scripts   toml.Primitive `toml:"scripts"`
	Admin     toml.Primitive `toml:"admin"`
	Broker    toml.Primitive `toml:"broker"`
	Store     toml.Primitive `toml:"store"`
	API       toml.Primitive `toml:"api"`
	HTTP      toml.Primitive `toml:"http"`
	Routes    toml.Primitive `toml:"routes"`
	History   value          `toml:"history"` // room patterns: read by history()
	Plugins   value          `toml:"plugins"` // each plugin decodes its own table
}

type rawServer struct {
	Listen           value `toml:"listen"`
	TLSCert          value `toml:"tls_cert"`
	TLSKey           value `toml:"tls_key"`
	StaticDir        value `toml:"static_dir"`
	AllowedOrigins   value `toml:"allowed_origins"`
	MaxMessageSize   value `toml:"max_message_size"`
	MaxConnections   value `toml:"max_connections"`
	HandshakeTimeout value `toml:"handshake_timeout"`
	WriteQueue       value `toml:"write_queue"`
	SlowConsumer     value `toml:"slow_consumer"`
	DrainTimeout     value `toml:"drain_timeout"`
	WriteTimeout     value `toml:"write_timeout"`
	Compression      value `toml:"compression"`
	// Dev console and /_moonwire.js: read by console() (console.go).
	Console       value `toml:"console"`
	ConsolePublic value `toml:"console_public"`
	ClientJS      value `toml:"client_js"`
}

type rawHeartbeat struct {
	Interval value `toml:"interval"`
	Timeout  value `toml:"timeout"`
}

type rawScripts struct {
	Dir            value `toml:"dir"`
	Reload         value `toml:"reload"`
	VMs            value `toml:"vms"`
	HandlerTimeout value `toml:"handler_timeout"`
	MemoryLimit    value `toml:"memory_limit"`
}

type rawAdmin struct {
	Listen      value `toml:"listen"`
	Pprof       value `toml:"pprof"`
	PprofPublic value `toml:"pprof_public"`
	Token       value `toml:"token"`
}

type rawStore struct {
	Kind         value `toml:"kind"`
	URL          value `toml:"url"`
	MaxBytes     value `toml:"max_bytes"`
	MaxKeys      value `toml:"max_keys"`
	MaxValueSize value `toml:"max_value_size"`
}

type rawBroker struct {
	Kind          value `toml:"kind"`
	URL           value `toml:"url"`
	Prefix        value `toml:"prefix"`
	Timeout       value `toml:"timeout"`
	Outbox        value `toml:"outbox"`
	StartDegraded value `toml:"start_degraded"`
	PresenceTTL   value `toml:"presence_ttl"`
}

type rawRoute struct {
	Path                value          `toml:"path"`
	Script              value          `toml:"script"`
	Heartbeat           toml.Primitive `toml:"heartbeat"`
	MaxMessageSize      value          `toml:"max_message_size"`
	RateLimit           toml.Primitive `toml:"rate_limit"`
	MaxConnectionsPerIP value          `toml:"max_connections_per_ip"`
	VMs                 value          `toml:"vms"`
	Settings            value          `toml:"settings"` // free-form: a value marks everything below it decoded
	Modules             value          `toml:"modules"`
}

type rawRateLimit struct {
	Messages value `toml:"messages"`
	Per      value `toml:"per"`
	Burst    value `toml:"burst"`
}

// value holds one TOML value as decoded, whatever its type. UnmarshalTOML
// never fails, so a type error is reported by the checks with the right key
// instead of stopping the decoder at the first one.
type value struct {
	v   any
	set bool
}

func (x *value) UnmarshalTOML(v any) error {
	x.v, x.set = v, true
	return nil
}

// schema maps a table's dotted key ("" for the root, "routes" for every
// route) to the keys it accepts. It is derived from the raw structs so the
// case check below cannot drift from what the decoder accepts.
var schema = map[string][]string{
	"":                  tomlNames(rawFile{}),
	"server":            tomlNames(rawServer{}),
	"heartbeat":         tomlNames(rawHeartbeat{}),
	"scripts":           tomlNames(rawScripts{}),
	"admin":             tomlNames(rawAdmin{}),
	"broker":            tomlNames(rawBroker{}),
	"store":             tomlNames(rawStore{}),
	"api":               tomlNames(rawAPI{}),
	"routes":            tomlNames(rawRoute{}),
	"routes.heartbeat":  tomlNames(rawHeartbeat{}),
	"routes.rate_limit": tomlNames(rawRateLimit{}),
}

func tomlNames(v any) []string {
	t := reflect.TypeOf(v)
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = t.Field(i).Tag.Get("toml")
	}
	return names
}

// typeName names a decoded TOML value's type the way the TOML spec does.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []map[string]any, []any:
		return "an array"
	case time.Time:
		return "a datetime"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// asArray returns the elements of a TOML array: [[x]] decodes to
// []map[string]any, an inline array to []any. tables holds the elements that
// are tables (nil for the others).
func asArray(v any) (items []any, tables []map[string]any, ok bool) {
	switch x := v.(type) {
	case []map[string]any:
		items = make([]any, len(x))
		for i, t := range x {
			items[i] = t
		}
		return items, x, true
	case []any:
		tables = make([]map[string]any, len(x))
		for i, e := range x {
			tables[i], _ = e.(map[string]any)
		}
		return x, tables, true
	}
	return nil, nil, false
}

// lookup walks a dotted key through nested tables.
func lookup(m map[string]any, k []string) (any, bool) {
	var cur any = m
	for _, p := range k {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// syntaxError turns the decoder's error into an Error with a line number.
func syntaxError(file string, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := "toml: " + pe.Message
		if pe.LastKey != "" {
			msg += " (last key " + strconv.Quote(pe.LastKey) + ")"
		}
		return &Error{File: file, Line: pe.Position.Line, Msg: msg, err: err}
	}
	return &Error{File: file, Msg: err.Error(), err: err}
}

// unknownKeys reports keys that the schema does not have, in document
// order: what MetaData.Undecoded returns, plus keys the decoder matched only
// case-insensitively (it falls back to strings.EqualFold, but TOML keys are
// case-sensitive and two spellings would race for one field). Keys below an
// already reported key, below a table whose shape was wrong (skip), and
// inside a route's settings are not reported.
func unknownKeys(md *toml.MetaData, routes []map[string]any, skip map[string]bool) []*Error {
	undecoded := map[string]int{}
	for _, k := range md.Undecoded() {
		undecoded[k.String()]++
	}
	var (
		out      []*Error
		reported = map[string]bool{}
		seen     = map[string]int{} // occurrences so far of a routes.* key, to find its route
	)
	for _, k := range md.Keys() {
		ks := k.String()
		idx := -1
		if len(k) > 1 && k[0] == "routes" {
			n := seen[ks]
			seen[ks]++
			idx = nthRouteWith(routes, k[1:], n)
		}
		var msg string
		if undecoded[ks] > 0 {
			undecoded[ks]--
			msg = "unknown key" + suggest(k)
		} else if bad, want := caseMismatch(k); bad >= 0 {
			k = k[:bad+1]
			msg = fmt.Sprintf("unknown key (keys are case-sensitive: did you mean %q?)", want)
		} else {
			continue
		}
		if len(k) > 2 && k[0] == "routes" && k[1] == "settings" {
			continue
		}
		dk := displayKey(k, idx)
		if under(k, idx, reported) || under(k, idx, skip) || skip[dk] || reported[dk] {
			continue
		}
		reported[dk] = true
		out = append(out, &Error{Key: dk, Msg: msg})
	}
	return out
}

// nthRouteWith returns the index of the n-th route (0-based) that contains
// the dotted key k, or -1. Keys of [[routes]] and of inline route arrays
// appear in document order, route by route, so the n-th occurrence of a key
// belongs to the n-th route that has it.
func nthRouteWith(routes []map[string]any, k []string, n int) int {
	for i, r := range routes {
		if _, ok := lookup(r, k); ok {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}

// caseMismatch finds the first segment of k that is not a schema key but
// equals one ignoring case; it returns its position and the right spelling,
// or -1.
func caseMismatch(k toml.Key) (int, string) {
	for i := range k {
		names, ok := schema[strings.Join(k[:i], ".")]
		if !ok {
			return -1, ""
		}
		exact := false
		for _, n := range names {
			if n == k[i] {
				exact = true
				break
			}
		}
		if exact {
			continue
		}
		for _, n := range names {
			if strings.EqualFold(n, k[i]) {
				return i, n
			}
		}
		return -1, ""
	}
	return -1, ""
}

// suggest offers the closest schema key for a typo.
func suggest(k toml.Key) string {
	names, ok := schema[strings.Join(k[:len(k)-1], ".")]
	if !ok {
		return ""
	}
	best, bestD := "", 3 // more than two edits away is not a typo
	for _, n := range names {
		if d := editDistance(strings.ToLower(k[len(k)-1]), n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is editdist.Distance for a key, with long words (which no
// typo hint is worth their cost) kept 99 away.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	return editdist.Distance(a, b)
}

// displayKey renders a key for messages, with the route index when known:
// routes[2].heartbeat.timeout.
func displayKey(k toml.Key, idx int) string {
	if len(k) > 0 && k[0] == "routes" && idx >= 0 {
		s := "routes[" + strconv.Itoa(idx) + "]"
		if len(k) > 1 {
			s += "." + k[1:].String()
		}
		return s
	}
	return k.String()
}

// under reports whether a proper prefix of k is in set.
func under(k toml.Key, idx int, set map[string]bool) bool {
	for j := 1; j < len(k); j++ {
		if set[displayKey(k[:j], idx)] {
			return true
		}
	}
	return false
}
