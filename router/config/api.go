package config

import "github.com/BurntSushi/toml"

// API is the [api] table: the server HTTP API through which a backend
// publishes into rooms. Off unless Listen is set.
type API struct {
	Listen string // host:port; "": no API
}

// api reads [api].
func (l *loader) api(tree map[string]any, c *Config, p toml.Primitive) {
	var r struct {
		Listen value `toml:"listen"`
	}
	if !l.table(tree, "api", p, &r) {
		return
	}
	l.str("api.listen", r.Listen, &c.API.Listen)
}
