package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const apiRoutes = "\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n"

func TestAPIDefaults(t *testing.T) {
	t.Parallel()
	c, _ := mustLoad(t, minimal)
	if want := (API{}); !reflect.DeepEqual(c.API, want) {
		t.Errorf("API = %+v, want %+v (off)", c.API, want)
	}
	c, _ = mustLoad(t, "[api]\n"+apiRoutes)
	if c.API.Listen != "" || c.API.MaxBody != 1<<20 {
		t.Errorf("empty [api]: %+v", c.API)
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	dir, file := fixture(t, `
[server]
listen = "127.0.0.1:8765"
[admin]
listen = "127.0.0.1:9090"
[api]
listen = "127.0.0.1:8766"
keys = ["0123456789abcdef", "another-key-of-32-characters-xx"]
key_file = "keys.txt"
max_body = "64KiB"
`+apiRoutes)
	keys := "# backend keys\n\n  key-from-the-file-1  \nkey-from-the-file-2\n"
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	want := API{
		Listen:  "127.0.0.1:8766",
		Keys:    []string{"0123456789abcdef", "another-key-of-32-characters-xx", "key-from-the-file-1", "key-from-the-file-2"},
		KeyFile: filepath.Join(dir, "keys.txt"),
		MaxBody: 64 << 10,
	}
	if !reflect.DeepEqual(c.API, want) {
		t.Errorf("API = %+v\nwant  %+v", c.API, want)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings for a loopback API: %q", c.Warnings)
	}
	c, _ = mustLoad(t, "[api]\nlisten = \"0.0.0.0:8766\"\nkeys = [\"0123456789abcdef\"]\n"+apiRoutes)
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, `api.listen: "0.0.0.0:8766" is not a loopback address`) {
		t.Errorf("warnings for a public API: %q", w)
	}
	// Port 0 is never another listener's port.
	mustLoad(t, "[server]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\nkeys = [\"0123456789abcdef\"]\n"+apiRoutes)
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	long := `keys = ["0123456789abcdef"]`
	for _, tc := range []struct{ api, key, msg string }{
		{`listen = "127.0.0.1:8766"`, "api.keys", "required when api.listen is set"},
		{`listen = "127.0.0.1:8766"` + "\nkeys = []", "api.keys", "required when api.listen is set"},
		{`listen = "127.0.0.1:8766"` + "\nkeys = [\"short\"]", "api.keys[0]", "at least 16 characters long, got 5"},
		{`listen = "127.0.0.1:8766"` + "\nkeys = [\"0123456789abcde\"]", "api.keys[0]", "at least 16 characters long, got 15"},
		{`listen = "127.0.0.1:8766"` + "\nkeys = [\"0123456789 abcdef\"]", "api.keys[0]", "printable ASCII without spaces"},
		{`listen = "127.0.0.1:8766"` + "\nkeys = [\"0123456789abcdéf\"]", "api.keys[0]", "printable ASCII without spaces"},
		{`keys = "0123456789abcdef"`, "api.keys", "must be an array of strings, not a string"},
		{`keys = [1234567890123456789]`, "api.keys[0]", "must be a string, not an integer"},
		{`listen = "127.0.0.1:8765"` + "\n" + long, "api.listen", "is also server.listen"},
		{`listen = "127.0.0.1:9090"` + "\n" + long, "api.listen", "is also admin.listen"},
		{`listen = "nonsense"` + "\n" + long, "api.listen", "invalid address"},
		{`listen = 8766` + "\n" + long, "api.listen", "must be a string"},
		{`max_body = 0`, "api.max_body", "must be greater than 0"},
		{`max_body = "lots"`, "api.max_body", ""},
		{`key_file = "missing.txt"`, "api.key_file", "does not exist"},
		{`key_file = "scripts"`, "api.key_file", "is a directory"},
		{`lisen = "127.0.0.1:8766"`, "api.lisen", "unknown key"},
	} {
		es, _ := loadErrors(t, "[server]\nlisten = \"127.0.0.1:8765\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n[api]\n"+tc.api+"\n"+apiRoutes)
		found := false
		for _, e := range es {
			found = found || (e.Key == tc.key && strings.Contains(e.Msg, tc.msg))
			if strings.Contains(e.Msg, "0123456789") || strings.Contains(e.Msg, "short") {
				t.Errorf("%q: a key shows in the message: %v", tc.api, e)
			}
		}
		if !found {
			t.Errorf("%q: errors %v, want %s: ...%s...", tc.api, es, tc.key, tc.msg)
		}
	}
}

// TestAPIKeyFileErrors: a key file's bad line is named by number, never
// shown; a file too large to be a key file is refused unread.
func TestAPIKeyFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ content, msg string }{
		{"good-key-0123456789\ntoo-short\n", "line 2: a key must be at least 16 characters long, got 9"},
		{"good-key-0123456789\nhas a space 0123456789\n", "line 2: a key must be printable ASCII"},
		{"# only comments\n\n", "api.keys"},
		{strings.Repeat("k", maxKeyFile+1), "larger than 1048576 bytes"},
	} {
		dir, file := fixture(t, "[api]\nlisten = \"127.0.0.1:8766\"\nkey_file = \"keys.txt\"\n"+apiRoutes)
		if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(file)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("key file %.30q: error %v, want %q", tc.content, err, tc.msg)
			continue
		}
		if strings.Contains(err.Error(), "too-short") || strings.Contains(err.Error(), "has a space") {
			t.Errorf("a key shows in the error: %v", err)
		}
	}
}
