package config

import (
	"cmp"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// HistoryRule is one entry of the [history] table: the rooms whose name
// matches Rooms keep their last Size broadcasts, for TTL after the latest.
type HistoryRule struct {
	Rooms string // a room name, or a pattern with * ? [...] (path.Match syntax)
	Size  int
	TTL   time.Duration
}

// Defaults and bounds of a history rule.
const (
	DefaultHistorySize = 100
	MaxHistorySize     = 10_000
	DefaultHistoryTTL  = 10 * time.Minute
)

// HistoryFor returns the size and ttl of room's history, from the most
// specific rule that matches it (an exact name, else the longest
// pattern); size 0: the room keeps none.
func (c *Config) HistoryFor(room string) (int, time.Duration) {
	for _, h := range c.History {
		if h.Rooms == room {
			return h.Size, h.TTL
		}
		if ok, _ := path.Match(h.Rooms, room); ok {
			return h.Size, h.TTL
		}
	}
	return 0, 0
}

// history reads [history]: "PATTERN" = { size = N, ttl = "10m" }.
func (l *loader) history(c *Config, r value) {
	if !r.set {
		return
	}
	t, ok := r.v.(map[string]any)
	if !ok {
		l.errorf("history", `must be a table of room patterns, like "chat:*" = { size = 50, ttl = "10m" }, not %s`, typeName(r.v))
		return
	}
	for pattern, v := range t {
		key := "history." + toml.Key{pattern}.String()
		if _, err := path.Match(pattern, ""); err != nil || pattern == "" {
			l.errorf(key, "is not a room name or pattern (* ? [...]): %q", pattern)
			continue
		}
		rule := HistoryRule{Rooms: pattern, Size: DefaultHistorySize, TTL: DefaultHistoryTTL}
		fields, ok := v.(map[string]any)
		if !ok {
			l.errorf(key, "must be a table like { size = 50, ttl = \"10m\" }, not %s", typeName(v))
			continue
		}
		for k, x := range fields {
			switch k {
			case "size":
				n, ok := x.(int64)
				if !ok || n < 1 || n > MaxHistorySize {
					l.errorf(key+".size", "must be an integer from 1 to %d, not %v", MaxHistorySize, x)
					continue
				}
				rule.Size = int(n)
			case "ttl":
				l.positiveDuration(key+".ttl", value{v: x, set: true}, &rule.TTL)
			default:
				l.errorf(key+"."+toml.Key{k}.String(), "unknown key (a history rule has size and ttl)")
			}
		}
		c.History = append(c.History, rule)
	}
	// Exact names first, then longer (more specific) patterns.
	slices.SortFunc(c.History, func(a, b HistoryRule) int {
		ea, eb := !strings.ContainsAny(a.Rooms, `*?[\`), !strings.ContainsAny(b.Rooms, `*?[\`)
		if ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(len(b.Rooms), len(a.Rooms)), cmp.Compare(a.Rooms, b.Rooms))
	})
}
