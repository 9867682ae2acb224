package config

import "github.com/BurntSushi/toml"

// HTTPClient is the [http] table: what scripts may reach with the http
// module's outbound requests.
type HTTPClient struct {
	Allow []string // host patterns scripts may reach; empty: none
}

// httpClient reads [http].
func (l *loader) httpClient(tree map[string]any, c *Config, p toml.Primitive) {
	var r struct {
		Allow value `toml:"allow"`
	}
	if !l.table(tree, "http", p, &r) {
		return
	}
	_ = r
}
