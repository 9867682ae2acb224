package moonwire

import "testing"

// TestSettingLine: an unread setting points at the line that sets it, in
// each way TOML lets a route set one, and at no other route's line.
func TestSettingLine(t *testing.T) {
	t.Parallel()
	src := []byte(`# settings = { key = 0 } in a comment
[server]
listen = "127.0.0.1:0"

[[routes]]
path = "/a"
script = "a.lua"
settings = { other = 1, key = 2 }

[[ routes ]]
path = "/b"
script = "b.lua"
# key = 3
[routes.settings]
"quoted" = 1
key = 4

[[routes]]
path = "/c"
script = "c.lua"
settings.key = 5

[[routes]]
path = "/d"
script = "d.lua"
settings = { keys = 6 }

[admin]
key = 7
`)
	for _, tc := range []struct {
		route int
		key   string
		want  int
	}{
		{0, "key", 8},
		{0, "other", 8},
		{1, "key", 16},
		{1, "quoted", 15},
		{2, "key", 21},
		{3, "key", 0}, // keys is not key; [admin] is not the route's
		{4, "key", 0}, // no such route
		{0, "missing", 0},
	} {
		if got := settingLine(src, tc.route, tc.key); got != tc.want {
			t.Errorf("route %d key %q: line %d, want %d", tc.route, tc.key, got, tc.want)
		}
	}
}
