package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/BurntSushi/toml"
)

// minimal is the smallest valid config: everything else is defaulted.
const minimal = `
[[routes]]
path = "/echo"
script = "echo.lua"
`

// fixture writes a config folder: moonwire.toml with body, scripts/ with
// echo.lua, chat.lua, rooms/lobby.lua and a directory named dir.lua, a
// static folder www/, a plain file notadir, and cert.pem/key.pem.
func fixture(t *testing.T, body string) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	for _, d := range []string{"scripts/rooms", "scripts/dir.lua", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"scripts/echo.lua", "scripts/chat.lua", "scripts/rooms/lobby.lua", "notadir", "cert.pem", "key.pem", "www/index.html"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("-- "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file = filepath.Join(dir, "moonwire.toml")
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func mustLoad(t *testing.T, body string) (*Config, string) {
	t.Helper()
	dir, file := fixture(t, body)
	c, err := Load(file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c, dir
}

// loadErrors loads body and returns the problems, failing if there are none.
func loadErrors(t *testing.T, body string) (Errors, string) {
	t.Helper()
	_, file := fixture(t, body)
	c, err := Load(file)
	if err == nil {
		t.Fatalf("Load succeeded, want an error; config: %+v", c)
	}
	if c != nil {
		t.Errorf("Load returned a config together with an error")
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want Errors: %v", err, err)
	}
	return es, file
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, dir := mustLoad(t, minimal)

	if c.File != filepath.Join(dir, "moonwire.toml") || c.Dir != dir {
		t.Errorf("File, Dir = %q, %q; want %q, %q", c.File, c.Dir, filepath.Join(dir, "moonwire.toml"), dir)
	}
	wantServer := Server{
		Listen:           "127.0.0.1:8765",
		MaxMessageSize:   1 << 20,
		HandshakeTimeout: 5 * time.Second,
		WriteQueue:       1 << 20,
		SlowConsumer:     "close",
		DrainTimeout:     10 * time.Second,
		WriteTimeout:     10 * time.Second,
	}
	if !reflect.DeepEqual(c.Server, wantServer) {
		t.Errorf("Server = %+v\nwant     %+v", c.Server, wantServer)
	}
	if want := (Heartbeat{10 * time.Second, 30 * time.Second}); c.Heartbeat != want {
		t.Errorf("Heartbeat = %+v, want %+v", c.Heartbeat, want)
	}
	if c.Scripts.Dir != filepath.Join(dir, "scripts") || !c.Scripts.Reload || c.Scripts.VMs != 0 || c.Scripts.HandlerTimeout != time.Second {
		t.Errorf("Scripts = %+v", c.Scripts)
	}
	if _, err := fs.ReadFile(c.Scripts.FS, "echo.lua"); err != nil {
		t.Errorf("Scripts.FS: %v", err)
	}
	if c.Admin.Listen != "" {
		t.Errorf("Admin.Listen = %q, want off", c.Admin.Listen)
	}
	if c.Broker != (Broker{Kind: "memory", Prefix: "moonwire", Timeout: 5 * time.Second, Outbox: 10000, PresenceTTL: 15 * time.Second}) {
		t.Errorf("Broker = %+v", c.Broker)
	}
	want := []Route{{
		Path:           "/echo",
		Script:         "echo.lua",
		Heartbeat:      c.Heartbeat,
		MaxMessageSize: 1 << 20,
		VMs:            runtime.NumCPU(),
		Settings:       map[string]any{},
	}}
	if !reflect.DeepEqual(c.Routes, want) {
		t.Errorf("Routes = %+v\nwant     %+v", c.Routes, want)
	}
}

func TestEveryKeyParsed(t *testing.T) {
	t.Parallel()
	dir, file := fixture(t, "")
	body := `
[server]
listen = ":0"
tls_cert = "cert.pem"
tls_key = "` + filepath.ToSlash(filepath.Join(dir, "key.pem")) + `"
static_dir = "www"
allowed_origins = ["https://Example.com", "https://*.example.com:8443", "http://[::1]:3000", "*"]
max_message_size = "64KiB"
max_connections = 1000
handshake_timeout = "2s"
write_queue = 4096
slow_consumer = "drop"
drain_timeout = "3s"
write_timeout = "250ms"
compression = true

[heartbeat]
interval = "20s"
timeout = "1m"

[scripts]
dir = "scripts"
reload = false
vms = 3
handler_timeout = "150ms"
memory_limit = "512MiB"

[admin]
listen = "127.0.0.1:9090"
pprof = true
pprof_public = false
token = "s3cret"

[broker]
kind = "nats"
url = "nats://a:4222, tls://b:4222"
prefix = "app-1"
timeout = "2s"
outbox = 500
start_degraded = true
presence_ttl = "3s"

[store]
kind = "nats"
max_bytes = "16MiB"
max_keys = 500
max_value_size = "64KiB"

[[routes]]
path = "/echo"
script = "./echo.lua"

[[routes]]
path = "/rooms/{room}/users/{user}"
script = "rooms/lobby.lua"
heartbeat = { interval = "5s", timeout = "15s" }
max_message_size = "1KB"
rate_limit = { messages = 50, per = "1s", burst = 100 }
max_connections_per_ip = 7
vms = 1
settings = { history = 50 }

[[routes]]
path = "/"
script = "chat.lua"
rate_limit = { messages = 5, per = "10s" }
vms = 0
`
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.StaticFS == nil || c.Scripts.FS == nil {
		t.Fatalf("StaticFS or Scripts.FS is nil")
	}
	if _, err := fs.ReadFile(c.Server.StaticFS, "index.html"); err != nil {
		t.Errorf("StaticFS: %v", err)
	}
	c.Server.StaticFS, c.Scripts.FS = nil, nil

	want := &Config{
		File: file,
		Dir:  dir,
		Server: Server{
			Listen:           ":0",
			TLSCert:          filepath.Join(dir, "cert.pem"),
			TLSKey:           filepath.Join(dir, "key.pem"),
			StaticDir:        filepath.Join(dir, "www"),
			AllowedOrigins:   []string{"https://example.com", "https://*.example.com:8443", "http://[::1]:3000", "*"},
			MaxMessageSize:   64 << 10,
			MaxConnections:   1000,
			HandshakeTimeout: 2 * time.Second,
			WriteQueue:       4096,
			SlowConsumer:     "drop",
			DrainTimeout:     3 * time.Second,
			WriteTimeout:     250 * time.Millisecond,
			Compression:      true,
		},
		Heartbeat: Heartbeat{20 * time.Second, time.Minute},
		Scripts:   Scripts{Dir: filepath.Join(dir, "scripts"), VMs: 3, HandlerTimeout: 150 * time.Millisecond, MemoryLimit: 512 << 20, MemoryLimitSet: true},
		Admin:     Admin{Listen: "127.0.0.1:9090", Pprof: true, Token: "s3cret"},
		Broker:    Broker{Kind: "nats", URL: "nats://a:4222, tls://b:4222", Prefix: "app-1", Timeout: 2 * time.Second, Outbox: 500, StartDegraded: true, PresenceTTL: 3 * time.Second},
		Store:     Store{Kind: "nats", URL: "nats://a:4222, tls://b:4222", MaxBytes: 16 << 20, MaxKeys: 500, MaxValueSize: 64 << 10},
		HTTP:      DefaultHTTPClient,
		Routes: []Route{
			{
				Path: "/echo", Script: "echo.lua",
				Heartbeat: Heartbeat{20 * time.Second, time.Minute}, MaxMessageSize: 64 << 10, VMs: 3,
				Settings: map[string]any{},
			},
			{
				Path: "/rooms/{room}/users/{user}", Script: "rooms/lobby.lua",
				Heartbeat:           Heartbeat{5 * time.Second, 15 * time.Second},
				MaxMessageSize:      1000,
				RateLimit:           &RateLimit{Messages: 50, Per: time.Second, Burst: 100},
				MaxConnectionsPerIP: 7,
				VMs:                 1,
				Settings:            map[string]any{"history": int64(50)},
			},
			{
				Path: "/", Script: "chat.lua",
				Heartbeat: Heartbeat{20 * time.Second, time.Minute}, MaxMessageSize: 64 << 10,
				RateLimit: &RateLimit{Messages: 5, Per: 10 * time.Second, Burst: 5},
				VMs:       runtime.NumCPU(),
				Settings:  map[string]any{},
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
		for i := range min(len(c.Routes), len(want.Routes)) {
			if !reflect.DeepEqual(c.Routes[i], want.Routes[i]) {
				t.Errorf("routes[%d]:\ngot  %+v\nwant %+v", i, c.Routes[i], want.Routes[i])
			}
		}
	}
}

func TestValidationErrors(t *testing.T) {
	t.Parallel()
	route := minimal
	tests := []struct {
		name string
		body string
		key  string // Error.Key
		msg  string // substring of Error.Msg
	}{
		// [server]
		{"listen without port", "[server]\nlisten = \"localhost\"\n" + route, "server.listen", `invalid address "localhost": missing port`},
		{"listen bad port", "[server]\nlisten = \"127.0.0.1:99999\"\n" + route, "server.listen", "port must be a number from 0 to 65535"},
		{"listen named port", "[server]\nlisten = \"127.0.0.1:http\"\n" + route, "server.listen", "port must be a number"},
		{"listen not a string", "[server]\nlisten = 8765\n" + route, "server.listen", "must be a string, not an integer"},
		{"tls cert without key", "[server]\ntls_cert = \"cert.pem\"\n" + route, "server.tls_key", "required when server.tls_cert is set"},
		{"tls key without cert", "[server]\ntls_key = \"key.pem\"\n" + route, "server.tls_cert", "required when server.tls_key is set"},
		{"tls cert missing", "[server]\ntls_cert = \"nope.pem\"\ntls_key = \"key.pem\"\n" + route, "server.tls_cert", `file "nope.pem" (`},
		{"tls key is a dir", "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"www\"\n" + route, "server.tls_key", "is a directory, not a file"},
		{"static dir missing", "[server]\nstatic_dir = \"nope\"\n" + route, "server.static_dir", "does not exist"},
		{"static dir is a file", "[server]\nstatic_dir = \"notadir\"\n" + route, "server.static_dir", "is not a directory"},
		{"origin with path", "[server]\nallowed_origins = [\"https://a.com/\"]\n" + route, "server.allowed_origins[0]", "an origin has no path"},
		{"origin without scheme", "[server]\nallowed_origins = [\"https://ok.com\", \"example.com\"]\n" + route, "server.allowed_origins[1]", "want scheme://host[:port]"},
		{"origin with user", "[server]\nallowed_origins = [\"https://u@a.com\"]\n" + route, "server.allowed_origins[0]", "no user info"},
		{"origin bad port", "[server]\nallowed_origins = [\"https://a.com:0\"]\n" + route, "server.allowed_origins[0]", "port must be"},
		{"origin bad host", "[server]\nallowed_origins = [\"https://a b.com\"]\n" + route, "server.allowed_origins[0]", "bad character"},
		{"origin not a string", "[server]\nallowed_origins = [1]\n" + route, "server.allowed_origins[0]", "must be a string"},
		{"origins not an array", "[server]\nallowed_origins = \"*\"\n" + route, "server.allowed_origins", "must be an array of strings"},
		{"size unknown unit", "[server]\nmax_message_size = \"12XB\"\n" + route, "server.max_message_size", `invalid size "12XB": unknown unit "XB"`},
		{"size zero", "[server]\nmax_message_size = 0\n" + route, "server.max_message_size", "must be greater than 0"},
		{"size negative int", "[server]\nmax_message_size = -1\n" + route, "server.max_message_size", "must not be negative"},
		{"size negative string", "[server]\nmax_message_size = \"-1KiB\"\n" + route, "server.max_message_size", "must not be negative"},
		{"size float", "[server]\nmax_message_size = 1.5\n" + route, "server.max_message_size", "not a float"},
		{"size overflow", "[server]\nmax_message_size = \"99999999999TiB\"\n" + route, "server.max_message_size", "too large"},
		{"write queue zero", "[server]\nwrite_queue = \"0KiB\"\n" + route, "server.write_queue", "must be greater than 0"},
		{"max connections negative", "[server]\nmax_connections = -1\n" + route, "server.max_connections", "must not be negative"},
		{"max connections string", "[server]\nmax_connections = \"10\"\n" + route, "server.max_connections", "must be an integer, not a string"},
		{"handshake timeout zero", "[server]\nhandshake_timeout = \"0s\"\n" + route, "server.handshake_timeout", "must be greater than 0"},
		{"handshake timeout int", "[server]\nhandshake_timeout = 5\n" + route, "server.handshake_timeout", `must be a duration string like "5s"`},
		{"handshake timeout no unit", "[server]\nhandshake_timeout = \"5\"\n" + route, "server.handshake_timeout", `invalid duration "5"`},
		{"drain timeout negative", "[server]\ndrain_timeout = \"-1s\"\n" + route, "server.drain_timeout", "must be greater than 0"},
		{"write timeout bad", "[server]\nwrite_timeout = \"soon\"\n" + route, "server.write_timeout", `invalid duration "soon"`},
		{"slow consumer", "[server]\nslow_consumer = \"block\"\n" + route, "server.slow_consumer", `must be "close" or "drop", not "block"`},
		{"compression", "[server]\ncompression = \"yes\"\n" + route, "server.compression", "must be true or false"},

		// [heartbeat]
		{"heartbeat interval zero", "[heartbeat]\ninterval = \"0s\"\n" + route, "heartbeat.interval", "must be greater than 0"},
		{"heartbeat timeout not after interval", "[heartbeat]\ninterval = \"10s\"\ntimeout = \"10s\"\n" + route, "heartbeat.timeout", "heartbeat.timeout (10s) must be greater than heartbeat.interval (10s)"},
		{"heartbeat interval past default timeout", "[heartbeat]\ninterval = \"40s\"\n" + route, "heartbeat.interval", "heartbeat.timeout (30s, default) must be greater than heartbeat.interval (40s)"},
		{"heartbeat not a table", "heartbeat = \"10s\"\n" + route, "heartbeat", "must be a table, not a string"},

		// [scripts]
		{"scripts dir missing", "[scripts]\ndir = \"lua\"\n" + route, "scripts.dir", `directory "lua" (`},
		{"scripts dir empty", "[scripts]\ndir = \"\"\n" + route, "scripts.dir", "must not be empty"},
		{"scripts dir is a file", "[scripts]\ndir = \"notadir\"\n" + route, "scripts.dir", "is not a directory"},
		{"scripts reload", "[scripts]\nreload = 1\n" + route, "scripts.reload", "must be true or false"},
		{"scripts vms negative", "[scripts]\nvms = -2\n" + route, "scripts.vms", "must not be negative"},
		{"handler timeout zero", "[scripts]\nhandler_timeout = \"0ms\"\n" + route, "scripts.handler_timeout", "must be greater than 0"},

		// [admin]
		{"admin listen bad", "[admin]\nlisten = \"9090\"\n" + route, "admin.listen", "missing port"},
		{"admin listen same as server", "[admin]\nlisten = \"127.0.0.1:8765\"\n" + route, "admin.listen", "is also server.listen"},
		{"admin pprof not a bool", "[admin]\nlisten = \"127.0.0.1:9090\"\npprof = \"yes\"\n" + route, "admin.pprof", "must be true or false"},
		{"admin pprof without listen", "[admin]\npprof = true\n" + route, "admin.pprof", "needs admin.listen"},

		// [broker]
		{"broker kind", "[broker]\nkind = \"my-broker\"\n" + route, "broker.kind", `must be a broker's name ("memory", "redis", "nats" or a plugin's), not "my-broker"`},
		{"redis without url", "[broker]\nkind = \"redis\"\n" + route, "broker.url", `required when broker.kind is "redis"`},
		{"redis wrong scheme", "[broker]\nkind = \"redis\"\nurl = \"http://h:6379\"\n" + route, "broker.url", "scheme must be redis:// or rediss://"},
		{"redis no host", "[broker]\nkind = \"redis\"\nurl = \"redis://\"\n" + route, "broker.url", "missing host"},
		{"nats wrong scheme", "[broker]\nkind = \"nats\"\nurl = \"nats://a:4222,redis://b\"\n" + route, "broker.url", `invalid URL "redis://b": scheme must be nats:// or tls://`},
		{"broker prefix", "[broker]\nprefix = \"a:b\"\n" + route, "broker.prefix", `must be 1 to 64 letters, digits, '_' or '-', not "a:b"`},
		{"broker prefix empty", "[broker]\nprefix = \"\"\n" + route, "broker.prefix", "must be 1 to 64"},
		{"broker timeout", "[broker]\ntimeout = \"0s\"\n" + route, "broker.timeout", "must be"},
		{"broker outbox", "[broker]\noutbox = 0\n" + route, "broker.outbox", "must be between 1 and 1000000, not 0"},
		{"broker presence_ttl", "[broker]\npresence_ttl = \"100ms\"\n" + route, "broker.presence_ttl", "must be at least 300ms"},
		{"broker start_degraded", "[broker]\nstart_degraded = 1\n" + route, "broker.start_degraded", "must be true or false"},
		{"store kind", "[store]\nkind = \"a b\"\n" + route, "store.kind", `must be a store's name`},
		{"store redis without url", "[store]\nkind = \"redis\"\n" + route, "store.url", `required when store.kind is "redis" and broker.kind is not`},
		{"store url on memory", "[store]\nurl = \"redis://h:1\"\n" + route, "store.url", `must be empty when store.kind is "memory"`},
		{"store wrong scheme", "[store]\nkind = \"redis\"\nurl = \"nats://h:1\"\n" + route, "store.url", "scheme must be redis:// or rediss://"},
		{"memory with url", "[broker]\nurl = \"redis://h:6379\"\n" + route, "broker.url", `must be empty when broker.kind is "memory"`},

		// routes, as a whole
		{"no routes", "[server]\n", "routes", "at least one [[routes]] entry is required"},
		{"empty routes", "routes = []\n", "routes", "at least one"},
		{"routes is a table", "[routes]\npath = \"/x\"\n", "routes", "must be an array of tables ([[routes]]), not a table"},
		{"route not a table", "routes = [1]\n", "routes[0]", "must be a table, not an integer"},

		// routes[].path
		{"path missing", "[[routes]]\nscript = \"echo.lua\"\n", "routes[0].path", "required"},
		{"path not a string", "[[routes]]\npath = 1\nscript = \"echo.lua\"\n", "routes[0].path", "must be a string"},
		{"path relative", "[[routes]]\npath = \"echo\"\nscript = \"echo.lua\"\n", "routes[0].path", `invalid path "echo": must start with "/"`},
		{"path empty segment", "[[routes]]\npath = \"/a//b\"\nscript = \"echo.lua\"\n", "routes[0].path", "empty segment"},
		{"path trailing slash", "[[routes]]\npath = \"/a/\"\nscript = \"echo.lua\"\n", "routes[0].path", "empty segment"},
		{"path dot dot", "[[routes]]\npath = \"/a/../b\"\nscript = \"echo.lua\"\n", "routes[0].path", `".." segments are not allowed`},
		{"param not whole segment", "[[routes]]\npath = \"/rooms/x{room}\"\nscript = \"echo.lua\"\n", "routes[0].path", "a parameter must be a whole segment"},
		{"param bad name", "[[routes]]\npath = \"/rooms/{1room}\"\nscript = \"echo.lua\"\n", "routes[0].path", `parameter name "1room"`},
		{"param empty name", "[[routes]]\npath = \"/rooms/{}\"\nscript = \"echo.lua\"\n", "routes[0].path", `parameter name ""`},
		{"param twice", "[[routes]]\npath = \"/{a}/{a}\"\nscript = \"echo.lua\"\n", "routes[0].path", "parameter {a} appears twice"},
		{"path with space", "[[routes]]\npath = \"/a b\"\nscript = \"echo.lua\"\n", "routes[0].path", `character ' ' is not allowed`},
		{"path with query", "[[routes]]\npath = \"/a?b=1\"\nscript = \"echo.lua\"\n", "routes[0].path", `character '?' is not allowed`},
		{"path bad escape", "[[routes]]\npath = \"/a%2\"\nscript = \"echo.lua\"\n", "routes[0].path", "must start an escape"},
		{"duplicate path", route + route + "[[routes]]\npath = \"/other\"\nscript = \"echo.lua\"\n" + route, "routes[3].path", `duplicate path "/echo" (also routes[0])`},
		{"same shape", "[[routes]]\npath = \"/rooms/{a}\"\nscript = \"echo.lua\"\n[[routes]]\npath = \"/rooms/{b}\"\nscript = \"echo.lua\"\n", "routes[1].path", `"/rooms/{b}" matches the same requests as routes[0].path "/rooms/{a}"`},

		// routes[].script
		{"script missing", "[[routes]]\npath = \"/x\"\n", "routes[0].script", "required"},
		{"script empty", "[[routes]]\npath = \"/x\"\nscript = \"\"\n", "routes[0].script", "required"},
		{"script not lua", "[[routes]]\npath = \"/x\"\nscript = \"echo.js\"\n", "routes[0].script", `"echo.js": must be a .lua file`},
		{"script is a test file", "[[routes]]\npath = \"/x\"\nscript = \"echo_test.lua\"\n", "routes[0].script", "holds tests for moonwire test, not a route script"},
		{"script absolute", "[[routes]]\npath = \"/x\"\nscript = \"/echo.lua\"\n", "routes[0].script", "must be relative to scripts.dir"},
		{"script escapes", "[[routes]]\npath = \"/x\"\nscript = \"rooms/../../echo.lua\"\n", "routes[0].script", "must stay inside scripts.dir"},
		{"script backslash", "[[routes]]\npath = \"/x\"\nscript = 'rooms\\lobby.lua'\n", "routes[0].script", "use forward slashes"},
		{"script is a directory", "[[routes]]\npath = \"/x\"\nscript = \"dir.lua\"\n", "routes[0].script", "is a directory"},
		{"script not found", route + "[[routes]]\npath = \"/x\"\nscript = \"nope.lua\"\n", "routes[1].script", `"nope.lua" not found in scripts dir `},

		// routes[] overrides
		{"route heartbeat not a table", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nheartbeat = \"5s\"\n", "routes[0].heartbeat", "must be a table, not a string"},
		{"route heartbeat zero", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nheartbeat = { interval = \"0s\" }\n", "routes[0].heartbeat.interval", "must be greater than 0"},
		{"route heartbeat timeout below inherited interval", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nheartbeat = { timeout = \"5s\" }\n", "routes[0].heartbeat.timeout", "routes[0].heartbeat.timeout (5s) must be greater than heartbeat.interval (10s)"},
		{"route heartbeat interval past inherited timeout", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nheartbeat = { interval = \"1m\" }\n", "routes[0].heartbeat.interval", "heartbeat.timeout (30s) must be greater than routes[0].heartbeat.interval (1m0s)"},
		{"route max message size", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nmax_message_size = \"0B\"\n", "routes[0].max_message_size", "must be greater than 0"},
		{"rate limit not a table", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = 5\n", "routes[0].rate_limit", "must be a table, not an integer"},
		{"rate limit messages zero", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { messages = 0, per = \"1s\" }\n", "routes[0].rate_limit.messages", "must be greater than 0"},
		{"rate limit messages missing", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { per = \"1s\" }\n", "routes[0].rate_limit.messages", "required"},
		{"rate limit per missing", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { messages = 5 }\n", "routes[0].rate_limit.per", "required"},
		{"rate limit per zero", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { messages = 5, per = \"0s\" }\n", "routes[0].rate_limit.per", "must be greater than 0"},
		{"rate limit burst below messages", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { messages = 5, per = \"1s\", burst = 4 }\n", "routes[0].rate_limit.burst", "4 must be at least routes[0].rate_limit.messages (5)"},
		{"max connections per ip", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nmax_connections_per_ip = -1\n", "routes[0].max_connections_per_ip", "must not be negative"},
		{"route vms", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nvms = -1\n", "routes[0].vms", "must not be negative"},
		{"settings not a table", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nsettings = [1]\n", "routes[0].settings", "must be a table, not an array"},

		// unknown keys
		{"unknown top-level key", "foo = 1\n" + route, "foo", "unknown key"},
		{"unknown table", "[extensions]\na = 1\nb = 2\n" + route, "extensions", "unknown key"},
		{"plugin not a table", "[plugins]\na = 1\n" + route, "plugins.a", "must be a table, not an integer"},
		{"plugin name", "[plugins.\"my-plugin\"]\nx = 1\n" + route, "plugins.my-plugin", "a plugin name is a Lua identifier"},
		{"plugins not a table", "plugins = 1\n" + route, "plugins", "must be a table of [plugins.NAME] tables, not an integer"},
		{"route modules type", strings.Replace(route, "[[routes]]", "[[routes]]\nmodules = \"greet\"", 1), "routes[0].modules", "must be an array of module names, not a string"},
		{"route modules name", strings.Replace(route, "[[routes]]", "[[routes]]\nmodules = [\"greet\", 3]", 1), "routes[0].modules[1]", "must be a string, not an integer"},
		{"route modules bad name", strings.Replace(route, "[[routes]]", "[[routes]]\nmodules = [\"a.b\"]", 1), "routes[0].modules[0]", `"a.b" is not a module name`},
		{"route modules twice", strings.Replace(route, "[[routes]]", "[[routes]]\nmodules = [\"greet\", \"greet\"]", 1), "routes[0].modules[1]", `"greet" is listed twice`},
		{"unknown server key", "[server]\nlistne = \"x\"\n" + route, "server.listne", `unknown key (did you mean "listen"?)`},
		{"wrong case", "[server]\nLISTEN = \":1\"\n" + route, "server.LISTEN", `keys are case-sensitive: did you mean "listen"?`},
		{"unknown route key", route + "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nscirpt = \"x\"\n", "routes[1].scirpt", `unknown key (did you mean "script"?)`},
		{"unknown key in inline heartbeat", route + "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nheartbeat = { interval = \"5s\", timout = \"15s\" }\n", "routes[1].heartbeat.timout", `unknown key (did you mean "timeout"?)`},
		{"unknown key in route heartbeat table", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\n[routes.heartbeat]\nintervall = \"5s\"\n", "routes[0].heartbeat.intervall", "unknown key"},
		{"unknown key in inline rate limit", "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\nrate_limit = { messages = 1, per = \"1s\", bursts = 2 }\n", "routes[0].rate_limit.bursts", "unknown key"},
		{"unknown key in inline route array", "routes = [{ path = \"/a\", script = \"echo.lua\" }, { path = \"/b\", script = \"echo.lua\", x = 1 }]\n", "routes[1].x", "unknown key"},
		{"unknown key in heartbeat", "[heartbeat]\nping = \"1s\"\n" + route, "heartbeat.ping", "unknown key"},
		{"unknown key in dotted form", "server.lsiten = \":1\"\n" + route, "server.lsiten", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			es, file := loadErrors(t, tt.body)
			var found *Error
			for _, e := range es {
				if e.Key == tt.key && strings.Contains(e.Msg, tt.msg) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("no error for key %q containing %q; got:\n%v", tt.key, tt.msg, es)
			}
			text := found.Error()
			if !strings.HasPrefix(text, file+": "+tt.key+": ") {
				t.Errorf("message %q does not start with file and key", text)
			}
			if !strings.Contains(es.Error(), text) {
				t.Errorf("Errors.Error() does not contain %q", text)
			}
		})
	}
}

func TestSyntaxErrorHasLine(t *testing.T) {
	t.Parallel()
	es, file := loadErrors(t, "[server]\nlisten = \"a\"\nlisten = \"b\"\n"+minimal)
	if len(es) != 1 || es[0].Line != 3 || es[0].File != file {
		t.Fatalf("got %#v", es)
	}
	if want := file + ":3: toml: "; !strings.HasPrefix(es[0].Error(), want) {
		t.Errorf("%q does not start with %q", es[0].Error(), want)
	}
	var pe toml.ParseError
	if !errors.As(es, &pe) {
		t.Errorf("the toml.ParseError is not reachable with errors.As")
	}

	es, _ = loadErrors(t, "\n[server\n")
	if es[0].Line < 2 {
		t.Errorf("Line = %d, want 1: %v", es[0].Line, es)
	}
}

func TestUnknownKeysAreNotRepeated(t *testing.T) {
	t.Parallel()
	// One report per wrong key: nothing for the keys inside an unknown
	// table, nothing inside a value of the wrong shape, nothing inside
	// settings.
	es, _ := loadErrors(t, `
[extensions]
a = 1
[extensions.sub]
b = 2

[[routes]]
path = "/x"
script = "echo.lua"
heartbeat = 5
settings = { anything = { goes = [1, { here = true }] } }
[routes.settings.more]
deep = { deeper = 1 }
[[routes.settings.list]]
item = 1
`)
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	if want := []string{"extensions", "routes[0].heartbeat"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("keys = %q, want %q\n%v", keys, want, es)
	}
}

func TestMultipleErrors(t *testing.T) {
	t.Parallel()
	es, file := loadErrors(t, `
[server]
listne = ":1"
max_message_size = "12XB"
slow_consumer = "block"

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/echo"
script = "nope.lua"
`)
	want := []string{
		"server.listne",
		"server.max_message_size",
		"server.slow_consumer",
		"routes[1].path",
		"routes[1].script",
	}
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys = %q, want %q", keys, want)
	}
	lines := strings.Split(es.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Error() has %d lines, want %d:\n%s", len(lines), len(want), es.Error())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, file+": "+want[i]+": ") {
			t.Errorf("line %d = %q", i, l)
		}
	}
	// The exact texts promised in the package brief.
	for _, w := range []string{
		file + `: server.max_message_size: invalid size "12XB": unknown unit "XB"`,
		file + `: routes[1].path: duplicate path "/echo" (also routes[0])`,
		file + `: routes[1].script: "nope.lua" not found in scripts dir ` + filepath.Join(filepath.Dir(file), "scripts"),
	} {
		if !strings.Contains(es.Error(), w) {
			t.Errorf("missing %q in\n%s", w, es.Error())
		}
	}
	var one *Error
	if !errors.As(error(es), &one) || one.Key != "server.listne" {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
	if !errors.Is(es, fs.ErrNotExist) {
		t.Errorf("the missing script's cause is not fs.ErrNotExist")
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(file)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if !strings.HasPrefix(err.Error(), file+": cannot read: ") {
		t.Errorf("err = %q", err)
	}
}

func TestSettingsPassthrough(t *testing.T) {
	t.Parallel()
	c, _ := mustLoad(t, `
[[routes]]
path = "/a"
script = "echo.lua"
settings = { history = 50, name = "lobby", ratio = 0.5, on = true, tokens = ["a", "b"], limits = { per_user = 3, nested = { deep = [1, 2] } } }

[[routes]]
path = "/b"
script = "echo.lua"
[routes.settings]
jwt_secret = "s"
[routes.settings.colors]
primary = "red"
[[routes.settings.users]]
name = "ann"
[[routes.settings.users]]
name = "bob"
admin = true
`)
	wantA := map[string]any{
		"history": int64(50),
		"name":    "lobby",
		"ratio":   0.5,
		"on":      true,
		"tokens":  []any{"a", "b"},
		"limits": map[string]any{
			"per_user": int64(3),
			"nested":   map[string]any{"deep": []any{int64(1), int64(2)}},
		},
	}
	wantB := map[string]any{
		"jwt_secret": "s",
		"colors":     map[string]any{"primary": "red"},
		"users": []map[string]any{
			{"name": "ann"},
			{"name": "bob", "admin": true},
		},
	}
	if !reflect.DeepEqual(c.Routes[0].Settings, wantA) {
		t.Errorf("routes[0].settings = %#v\nwant %#v", c.Routes[0].Settings, wantA)
	}
	if !reflect.DeepEqual(c.Routes[1].Settings, wantB) {
		t.Errorf("routes[1].settings = %#v\nwant %#v", c.Routes[1].Settings, wantB)
	}
}

func TestRouteHeartbeatMerge(t *testing.T) {
	t.Parallel()
	c, _ := mustLoad(t, `
[heartbeat]
interval = "10s"
timeout = "40s"

[[routes]]
path = "/inherit"
script = "echo.lua"

[[routes]]
path = "/interval"
script = "echo.lua"
heartbeat = { interval = "20s" }

[[routes]]
path = "/timeout"
script = "echo.lua"
[routes.heartbeat]
timeout = "11s"

[[routes]]
path = "/both"
script = "echo.lua"
heartbeat = { interval = "1s", timeout = "2s" }
`)
	want := []Heartbeat{
		{10 * time.Second, 40 * time.Second},
		{20 * time.Second, 40 * time.Second},
		{10 * time.Second, 11 * time.Second},
		{time.Second, 2 * time.Second},
	}
	for i, w := range want {
		if c.Routes[i].Heartbeat != w {
			t.Errorf("routes[%d] (%s) heartbeat = %+v, want %+v", i, c.Routes[i].Path, c.Routes[i].Heartbeat, w)
		}
	}
	if c.Heartbeat != want[0] {
		t.Errorf("[heartbeat] changed by an override: %+v", c.Heartbeat)
	}
}

func TestRouteInheritance(t *testing.T) {
	t.Parallel()
	c, _ := mustLoad(t, `
[server]
max_message_size = "2MiB"
[scripts]
vms = 4

[[routes]]
path = "/a"
script = "echo.lua"

[[routes]]
path = "/b"
script = "echo.lua"
max_message_size = 100
vms = 2

[[routes]]
path = "/c"
script = "echo.lua"
vms = 0
`)
	got := [][2]int64{}
	for _, r := range c.Routes {
		got = append(got, [2]int64{r.MaxMessageSize, int64(r.VMs)})
	}
	want := [][2]int64{{2 << 20, 4}, {100, 2}, {2 << 20, int64(runtime.NumCPU())}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("(max_message_size, vms) = %v, want %v", got, want)
	}
	if c.Scripts.VMs != 4 {
		t.Errorf("Scripts.VMs = %d", c.Scripts.VMs)
	}
}

func TestPathResolution(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mk := func(p, data string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if data != "" {
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("lua/echo.lua", "--")
	mk("lua/rooms/chat.lua", "--")
	mk("tls/cert.pem", "c")
	mk("abs-scripts/x.lua", "--")
	if err := os.MkdirAll(filepath.Join(root, "conf", "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	mk("conf/moonwire.toml", `
[server]
tls_cert = "../tls/cert.pem"
tls_key = "`+filepath.ToSlash(filepath.Join(root, "tls", "cert.pem"))+`"
static_dir = "www"
[scripts]
dir = "../lua"

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/chat/{room}"
script = "rooms/./chat.lua"
`)
	c, err := Load(filepath.Join(root, "conf", "moonwire.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "lua"); c.Scripts.Dir != want {
		t.Errorf("Scripts.Dir = %q, want %q", c.Scripts.Dir, want)
	}
	if want := filepath.Join(root, "tls", "cert.pem"); c.Server.TLSCert != want || c.Server.TLSKey != want {
		t.Errorf("TLS = %q, %q; want %q", c.Server.TLSCert, c.Server.TLSKey, want)
	}
	if want := filepath.Join(root, "conf", "www"); c.Server.StaticDir != want {
		t.Errorf("StaticDir = %q, want %q", c.Server.StaticDir, want)
	}
	if c.Routes[1].Script != "rooms/chat.lua" {
		t.Errorf("script = %q, want the cleaned path", c.Routes[1].Script)
	}
	for _, r := range c.Routes {
		if _, err := fs.ReadFile(c.Scripts.FS, r.Script); err != nil {
			t.Errorf("%s: %v", r.Script, err)
		}
	}

	// An absolute scripts.dir is used as is.
	abs := filepath.Join(root, "abs.toml")
	body := "[scripts]\ndir = \"" + filepath.ToSlash(filepath.Join(root, "abs-scripts")) + "\"\n[[routes]]\npath = \"/\"\nscript = \"x.lua\"\n"
	if err := os.WriteFile(abs, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Load(abs)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "abs-scripts"); c.Scripts.Dir != want {
		t.Errorf("Scripts.Dir = %q, want %q", c.Scripts.Dir, want)
	}
}

func embedded(config string) fstest.MapFS {
	return fstest.MapFS{
		"conf/moonwire.toml":      {Data: []byte(config)},
		"conf/scripts/echo.lua":   {Data: []byte("return {}")},
		"conf/scripts/lib/x.lua":  {Data: []byte("return {}")},
		"conf/www/index.html":     {Data: []byte("<p>hi</p>")},
		"conf/other/scripts.lua":  {Data: []byte("--")},
		"outside/escape.lua":      {Data: []byte("--")},
		"conf/scripts/folder.lua": {Mode: fs.ModeDir},
	}
}

func TestLoadFS(t *testing.T) {
	t.Parallel()
	fsys := embedded(`
[server]
static_dir = "www"
[[routes]]
path = "/echo"
script = "echo.lua"
[[routes]]
path = "/lib"
script = "lib/x.lua"
`)
	c, err := LoadFS(fsys, "conf/moonwire.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "<embedded>/conf/moonwire.toml" || c.Dir != "" || c.Scripts.Dir != "" {
		t.Errorf("File, Dir, Scripts.Dir = %q, %q, %q", c.File, c.Dir, c.Scripts.Dir)
	}
	if b, err := fs.ReadFile(c.Scripts.FS, "lib/x.lua"); err != nil || string(b) != "return {}" {
		t.Errorf("Scripts.FS: %q, %v", b, err)
	}
	if c.Server.StaticDir != "www" {
		t.Errorf("StaticDir = %q, want it as written", c.Server.StaticDir)
	}
	if _, err := fs.ReadFile(c.Server.StaticFS, "index.html"); err != nil {
		t.Errorf("StaticFS: %v", err)
	}
}

func TestLoadFSErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config, file, key, msg string
	}{
		{"script not found", "[[routes]]\npath = \"/\"\nscript = \"nope.lua\"\n", "conf/moonwire.toml",
			"routes[0].script", `"nope.lua" not found in scripts dir <embedded>/conf/scripts`},
		{"script is a directory", "[[routes]]\npath = \"/\"\nscript = \"folder.lua\"\n", "conf/moonwire.toml",
			"routes[0].script", "is a directory"},
		{"scripts dir leaves fsys", "[scripts]\ndir = \"../../x\"\n[[routes]]\npath = \"/\"\nscript = \"echo.lua\"\n", "conf/moonwire.toml",
			"scripts.dir", `"../../x" leaves <embedded>`},
		{"scripts dir absolute", "[scripts]\ndir = \"/scripts\"\n[[routes]]\npath = \"/\"\nscript = \"echo.lua\"\n", "conf/moonwire.toml",
			"scripts.dir", "must be a slash-separated path relative to the config file"},
		{"scripts dir missing", "[scripts]\ndir = \"lua\"\n[[routes]]\npath = \"/\"\nscript = \"echo.lua\"\n", "conf/moonwire.toml",
			"scripts.dir", `directory "lua" (<embedded>/conf/lua) does not exist`},
		{"scripts dir is a file", "[scripts]\ndir = \"other/scripts.lua\"\n[[routes]]\npath = \"/\"\nscript = \"echo.lua\"\n", "conf/moonwire.toml",
			"scripts.dir", "is not a directory"},
		{"static dir missing", "[server]\nstatic_dir = \"nope\"\n[[routes]]\npath = \"/\"\nscript = \"echo.lua\"\n", "conf/moonwire.toml",
			"server.static_dir", "does not exist"},
		{"missing config", "", "conf/nope.toml", "", "cannot read: "},
		{"invalid name", "", "../x.toml", "", "invalid file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadFS(embedded(tt.config), tt.file)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v (%T), want Errors", err, err)
			}
			for _, e := range es {
				if e.Key == tt.key && strings.Contains(e.Msg, tt.msg) {
					if want := "<embedded>/" + tt.file + ": "; !strings.HasPrefix(e.Error(), want) {
						t.Errorf("%q does not start with %q", e.Error(), want)
					}
					return
				}
			}
			t.Errorf("no error for key %q containing %q; got:\n%v", tt.key, tt.msg, es)
		})
	}
}

func TestLoadFSRoot(t *testing.T) {
	t.Parallel()
	// A config at the root of fsys resolves scripts.dir from ".".
	fsys := fstest.MapFS{
		"moonwire.toml":    {Data: []byte(minimal)},
		"scripts/echo.lua": {Data: []byte("return {}")},
	}
	c, err := LoadFS(fsys, "moonwire.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat(c.Scripts.FS, "echo.lua"); err != nil {
		t.Error(err)
	}
}

func TestCheckPattern(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"/":                          "/",
		"/echo":                      "/echo",
		"/chat/{room}":               "/chat/{}",
		"/a/{b}/c/{d_2}":             "/a/{}/c/{}",
		"/v1/~user/a.b-c_d%20e:f@g=": "/v1/~user/a.b-c_d%20e:f@g=",
		"/{_x}":                      "/{}",
	}
	for p, want := range ok {
		got, err := checkPattern(p)
		if err != nil || got != want {
			t.Errorf("checkPattern(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	for _, p := range []string{"", "x", "//", "/a/", "/./a", "/{a", "/a}", "/{a}}", "/{a-b}", "/%zz", "/%", "/é", "/a#b"} {
		if _, err := checkPattern(p); err == nil {
			t.Errorf("checkPattern(%q) accepted", p)
		}
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	ok := map[string]int64{
		"0": 0, "100": 100, "512B": 512, "64KiB": 64 << 10, "1MiB": 1 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40,
		"1KB": 1000, "1kB": 1000, "3MB": 3e6, "1GB": 1e9, "1TB": 1e12, " 64 KiB ": 64 << 10,
	}
	for in, want := range ok {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || int64(s) != want {
			t.Errorf("Size(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "1.5MiB", "12XB", "1mib", "1Mb", "-1", "9223372036854775808", "9999999TiB"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("Size(%q) accepted as %d", in, s)
		}
	}
	for n, want := range map[Size]string{0: "0B", 100: "100B", 1024: "1KiB", 1536: "1536B", 64 << 20: "64MiB", 3 << 30: "3GiB"} {
		if n.String() != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(n), n.String(), want)
		}
	}

	// The TOML forms, as a plugin decoding its own section would use them.
	var v struct {
		A, B Size
		D    Duration
	}
	if _, err := toml.Decode("A = 2048\nB = \"4KiB\"\nD = \"1m30s\"", &v); err != nil {
		t.Fatal(err)
	}
	if v.A != 2048 || v.B != 4096 || time.Duration(v.D) != 90*time.Second || v.D.String() != "1m30s" {
		t.Errorf("decoded %+v", v)
	}
	for _, bad := range []string{"A = -1", "A = 1.5", "A = true", "D = 5", "D = \"5\"", "D = \"fast\""} {
		if _, err := toml.Decode(bad, &v); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestOrigins(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"*":                        "*",
		"https://example.com":      "https://example.com",
		"HTTPS://Example.COM:443":  "https://example.com", // browsers send no default port
		"https://example.com:8443": "https://example.com:8443",
		"https://*.example.com":    "https://*.example.com",
		"http://localhost:3000":    "http://localhost:3000",
		"http://[::1]":             "http://[::1]",
		"http://[::1]:8080":        "http://[::1]:8080",
		"chrome-extension://abc":   "chrome-extension://abc",
	}
	for in, want := range ok {
		if got, err := checkOrigin(in); err != nil || got != want {
			t.Errorf("checkOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "**", "example.com", "://a.com", "https://", "https://a.com/", "https://a.com/x",
		"https://a.com?x", "https://u:p@a.com", "https://a.com:", "https://a.com:x", "https://a.com:70000",
		"https://[::1", "https://[::1]x", "https://[zz]", "1http://a.com", "null", "http://127.1", "https://[:::]"} {
		if _, err := checkOrigin(in); err == nil {
			t.Errorf("checkOrigin(%q) accepted", in)
		}
	}
}

// FuzzParse feeds arbitrary bytes through LoadFS: whatever the input, the
// loader must not panic, must return exactly one of a config or an error,
// and a config it returns must satisfy the invariants the router relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`
[server]
listen = ":0"
allowed_origins = ["https://*.example.com"]
max_message_size = "64KiB"
[heartbeat]
interval = "5s"
timeout = "15s"
[[routes]]
path = "/chat/{room}"
script = "echo.lua"
heartbeat = { interval = "1s" }
rate_limit = { messages = 5, per = "1s", burst = 10 }
settings = { a = [1, { b = 2 }] }
`))
	f.Add([]byte("routes = [{ path = \"/a\", script = \"echo.lua\", x = 1 }, 1, \"s\"]\n[server]\nLISTEN = 1\n"))
	f.Add([]byte("[[routes]]\npath = \"/{a}/{a}\"\nscript = \"../x.lua\"\nheartbeat = 5\n[routes.settings]\n[[routes.settings.x]]\n"))
	f.Add([]byte("[server\n"))
	f.Add([]byte("server = 1\nheartbeat = []\nscripts = \"x\"\nroutes = {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := LoadFS(fstest.MapFS{
			"moonwire.toml":    {Data: data},
			"scripts/echo.lua": {Data: []byte("return {}")},
		}, "moonwire.toml")
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v and error %v", c, err)
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			for _, e := range es {
				if e.File != "<embedded>/moonwire.toml" || e.Msg == "" {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		if len(c.Routes) == 0 {
			t.Fatal("config without routes")
		}
		for _, r := range c.Routes {
			if r.Heartbeat.Timeout <= r.Heartbeat.Interval || r.Heartbeat.Interval <= 0 ||
				r.MaxMessageSize <= 0 || r.VMs <= 0 || r.Settings == nil ||
				(r.RateLimit != nil && (r.RateLimit.Messages <= 0 || r.RateLimit.Per <= 0 || r.RateLimit.Burst < r.RateLimit.Messages)) {
				t.Fatalf("route violates invariants: %+v", r)
			}
			if _, err := fs.Stat(c.Scripts.FS, r.Script); err != nil {
				t.Fatalf("route script %q: %v", r.Script, err)
			}
		}
	})
}

// TestAdminExposure: the profiler is refused on an admin listener other
// hosts can reach unless forced; such a listener without a token is a
// warning, not an error.
func TestAdminExposure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		admin, err, warning string
	}{
		{"listen = \"127.0.0.1:9090\"\npprof = true", "", ""},
		{"listen = \"[::1]:9090\"\npprof = true", "", ""},
		{"listen = \"localhost:9090\"", "", ""},
		{"listen = \"0.0.0.0:9090\"\npprof = true", "admin.pprof: refused on \"0.0.0.0:9090\", which is not a loopback address", ""},
		{"listen = \":9090\"\npprof = true\npprof_public = true\ntoken = \"t\"", "", ""},
		{"listen = \":9090\"", "", "admin.listen: \":9090\" is not a loopback address and admin.token is not set"},
		{"listen = \"10.0.0.1:9090\"\ntoken = \"t\"", "", ""},
	} {
		_, file := fixture(t, "[admin]\n"+tc.admin+"\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n")
		c, err := Load(file)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.admin, err, tc.err)
			}
			continue
		case err != nil:
			t.Errorf("%q: %v", tc.admin, err)
			continue
		}
		got := strings.Join(c.Warnings, "\n")
		if tc.warning == "" && got != "" || !strings.Contains(got, tc.warning) {
			t.Errorf("%q: warnings %q, want %q", tc.admin, got, tc.warning)
		}
	}
}

// TestStoreBounds: the store's limits must fit together.
func TestStoreBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		store string
		want  Store
		err   string
	}{
		{"", Store{Kind: "memory", MaxBytes: 64 << 20, MaxKeys: 100_000, MaxValueSize: 1 << 20}, ""},
		{"max_bytes = \"512KiB\"", Store{Kind: "memory", MaxBytes: 512 << 10, MaxKeys: 100_000, MaxValueSize: 512 << 10}, ""},
		{"max_bytes = \"1MiB\"\nmax_value_size = \"2MiB\"", Store{}, "store.max_value_size: 2097152 is more than store.max_bytes (1048576)"},
		{"max_keys = 0", Store{}, "store.max_keys: must be greater than 0"},
		{"max_bytes = 0", Store{}, "store.max_bytes: must be greater than 0"},
	} {
		_, file := fixture(t, "[store]\n"+tc.store+"\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n")
		c, err := Load(file)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.store, err, tc.err)
			}
			continue
		}
		if err != nil || c.Store != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.store, c.Store, err, tc.want)
		}
	}
}
