package moonwire

import "testing"

// TestWatchRelevant: which changed paths reload. The scripts folder here
// is the config's own folder, where a log or an editor's files sit beside
// the scripts.
func TestWatchRelevant(t *testing.T) {
	const dir = "/srv/app"
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"/srv/app/moonwire.toml", true},
		{"/srv/app/chat.lua", true},
		{"/srv/app/lib/util.lua", true},
		{"/srv/app/lib", true}, // a folder of modules, moved or removed
		{"/srv/app/./chat.lua", true},
		{"/srv/tls/cert.pem", true},
		{"/srv/tls/key.pem", true},
		{"/srv/app/moonwire.log", false},
		{"/srv/app/chat.lua.tmp~", false},
		{"/srv/app/.chat.lua.swp", false},
		{"/srv/app/.#chat.lua", false},
		{"/srv/app/.git/index", false},
		{"/srv/app/.git", false},
		{"/srv/app/data.json", false},
		{"/srv/tls/other.pem", false},
		{"/srv/other.lua", false},
		{"/srv/app/../other.lua", false},
	} {
		if got := watchRelevant(tc.name, dir+"/moonwire.toml", dir, "/srv/tls/cert.pem", "/srv/tls/key.pem", ""); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
