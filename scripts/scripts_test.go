package scripts_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/crypto"
	"github.com/moonwire/moonwire/router/config"
	"github.com/moonwire/moonwire/scripts"
)

// startDefault serves the embedded default config, as `moonwire` with no
// flags does, on a free port; tweak may adjust it first.
func startDefault(t *testing.T, tweak func(*config.Config)) *moontest.Server {
	t.Helper()
	cfg, err := config.LoadFS(scripts.FS, scripts.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(cfg)
	}
	return moontest.StartConfig(t, cfg)
}

func settingsOf(cfg *config.Config, path string) map[string]any {
	for i := range cfg.Routes {
		if cfg.Routes[i].Path == path {
			return cfg.Routes[i].Settings
		}
	}
	panic("no route " + path)
}

func decode(t *testing.T, f moontest.Frame) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(f.Payload, &m); err != nil {
		t.Fatalf("not JSON: %q: %v", f.Payload, err)
	}
	return m
}

func TestEcho(t *testing.T) {
	t.Parallel()
	s := startDefault(t, nil)
	c := moontest.Dial(t, s.URL("/echo"))
	c.Send("Hello WebSocket!")
	c.Expect("Hello WebSocket!")
	c.SendBinary([]byte{0, 0xff})
	c.ExpectBinary([]byte{0, 0xff})
	c.Close(1000)
}

func TestChat(t *testing.T) {
	t.Parallel()
	s := startDefault(t, nil)
	a := moontest.Dial(t, s.URL("/chat/room1"))
	joinA := decode(t, a.Next())
	if joinA["type"] != "join" || joinA["room"] != "room1" || joinA["members"] != 1.0 {
		t.Fatalf("a's join: %v", joinA)
	}
	idA := joinA["id"].(string)
	b := moontest.Dial(t, s.URL("/chat/room1"))
	joinB := decode(t, b.Next())
	if joinB["members"] != 2.0 {
		t.Fatalf("b's join: %v", joinB)
	}
	if got := decode(t, a.Next()); got["type"] != "join" || got["id"] != joinB["id"] {
		t.Fatalf("a saw %v", got)
	}
	// Another room hears nothing.
	other := moontest.Dial(t, s.URL("/chat/room2"))
	other.Next() // its own join

	a.Send("hello")
	msg := decode(t, b.Next())
	if msg["type"] != "message" || msg["text"] != "hello" || msg["from"] != idA || msg["room"] != "room1" {
		t.Fatalf("b got %v", msg)
	}
	b.SendBinary([]byte{1, 2})
	a.ExpectBinary([]byte{1, 2})

	// A late joiner gets the history, then its join.
	c := moontest.Dial(t, s.URL("/chat/room1"))
	if got := decode(t, c.Next()); got["type"] != "message" || got["text"] != "hello" {
		t.Fatalf("history: %v", got)
	}
	if got := decode(t, c.Next()); got["type"] != "join" || got["members"] != 3.0 {
		t.Fatalf("c's join: %v", got)
	}
	a.Next()
	b.Next()

	c.Close(1000)
	for _, x := range []*moontest.Client{a, b} {
		if got := decode(t, x.Next()); got["type"] != "leave" || got["members"] != 2.0 {
			t.Fatalf("leave: %v", got)
		}
	}
	// The lobby route shares the script.
	l := moontest.Dial(t, s.URL("/chat"))
	if got := decode(t, l.Next()); got["room"] != "lobby" {
		t.Fatalf("lobby: %v", got)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := startDefault(t, nil)
	valid, err := crypto.SignHS256([]byte(`{"sub":"ann","exp":4102444800}`), []byte("dev-secret"))
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := crypto.SignHS256([]byte(`{"sub":"ann","exp":1}`), []byte("dev-secret"))
	forged, _ := crypto.SignHS256([]byte(`{"sub":"ann"}`), []byte("not-the-secret"))
	forever, _ := crypto.SignHS256([]byte(`{"sub":"ann"}`), []byte("dev-secret"))

	accept := []struct {
		name   string
		url    string
		header http.Header
		user   string
	}{
		{"header token", "/auth", http.Header{"X-Auth-Token": {"dev-token"}}, "user"},
		{"query token", "/auth?token=dev-token", nil, "user"},
		{"bearer jwt", "/auth", http.Header{"Authorization": {"Bearer " + valid}}, "ann"},
		{"header jwt", "/auth", http.Header{"X-Auth-Token": {valid}}, "ann"},
	}
	for _, tc := range accept {
		c := moontest.Dial(t, s.URL(tc.url), moontest.DialOptions{Header: tc.header})
		if got := decode(t, c.Next()); got["type"] != "welcome" || got["user"] != tc.user {
			t.Errorf("%s: welcome %v", tc.name, got)
		}
		c.Send("ping?")
		c.Expect("ping?")
	}
	refuse := []struct {
		name   string
		header http.Header
	}{
		{"no token", nil},
		{"wrong token", http.Header{"X-Auth-Token": {"nope"}}},
		{"expired jwt", http.Header{"X-Auth-Token": {expired}}},
		{"forged jwt", http.Header{"Authorization": {"Bearer " + forged}}},
		// Valid forever, however it leaked: refused unless
		// settings.jwt_require_exp = false.
		{"jwt without exp", http.Header{"X-Auth-Token": {forever}}},
	}
	for _, tc := range refuse {
		_, err := moontest.TryDial(t, s.URL("/auth"), moontest.DialOptions{Header: tc.header})
		r, ok := err.(*moontest.Refusal)
		if !ok || r.Status != 401 || r.Body != "Invalid or missing token" {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestMonitor(t *testing.T) {
	t.Parallel()
	s := startDefault(t, func(cfg *config.Config) {
		settingsOf(cfg, "/monitor")["interval"] = 0.05
	})
	_, err := moontest.TryDial(t, s.URL("/monitor"), moontest.DialOptions{Header: http.Header{"X-Monitor-Token": {"wrong"}}})
	if r, ok := err.(*moontest.Refusal); !ok || r.Status != 401 || r.Body != "Invalid Monitor Token" {
		t.Fatalf("wrong token: %v", err)
	}
	hdr := moontest.DialOptions{Header: http.Header{"X-Monitor-Token": {"monitor-token"}}}
	a := moontest.Dial(t, s.URL("/monitor"), hdr)
	b := moontest.Dial(t, s.URL("/monitor?token=monitor-token"))
	a.Send(`{"cpu":12.5}`)
	b.SendBinary([]byte("12.5|40"))

	// Snapshots arrive on a timer; wait for one holding both reports.
	deadline := time.Now().Add(moontest.Timeout)
	for {
		snap := decode(t, a.Next())
		if snap["type"] != "snapshot" {
			t.Fatalf("got %v", snap)
		}
		clients := snap["clients"].([]any)
		if len(clients) == 2 {
			kinds := map[string]any{}
			for _, c := range clients {
				m := c.(map[string]any)
				kinds[m["kind"].(string)] = m["report"]
				if !strings.HasPrefix(m["addr"].(string), "127.0.0.1:") {
					t.Fatalf("addr %v", m["addr"])
				}
			}
			if r, ok := kinds["text"].(map[string]any); !ok || r["cpu"] != 12.5 {
				t.Fatalf("text report %v", kinds["text"])
			}
			if kinds["binary"] != "MTIuNXw0MA==" {
				t.Fatalf("binary report %v", kinds["binary"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot with both clients")
		}
	}
	// A client that leaves drops out of the snapshot.
	b.Close(1000)
	for {
		snap := decode(t, a.Next())
		if len(snap["clients"].([]any)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed client stayed in the snapshot")
		}
	}
}

// TestChatHistoryIsBounded: any client writes into a room's history, so
// it is bounded: messages past history_max_bytes are relayed but not kept,
// rooms past history_rooms keep none, and kept messages expire after
// history_ttl. (120 rooms x 20 messages of 1 MB used to stay in the store
// for good.) And a message is replayed by the next joiner while it lives.
func TestChatHistoryIsBounded(t *testing.T) {
	t.Parallel()
	s := startDefault(t, func(cfg *config.Config) {
		st := settingsOf(cfg, "/chat/{room}")
		st["history_rooms"], st["history_max_bytes"], st["history_ttl"] = int64(2), int64(200), 1.5
	})
	send := func(room, text string) { say(t, s, room, text) }
	history := func(room string) []string { return historyOf(t, s, room) }
	send("r1", "one")
	send("r1", strings.Repeat("long ", 50))
	send("r2", "two")
	send("r3", "three") // a third room: relayed, not kept
	if got := strings.Join(history("r1"), ","); got != "one" {
		t.Fatalf("r1's history: %q, want the short message only", got)
	}
	if got := strings.Join(history("r3"), ","); got != "" {
		t.Fatalf("r3's history: %q, want none (room limit)", got)
	}
	moontest.WaitFor(t, "the history to expire", func() bool { return len(history("r2")) == 0 })
	// The expired rooms make room once chat.lua recounts the rooms with
	// history (every history_ttl here, at most every minute).
	var got []string
	moontest.WaitFor(t, "r3 to keep history", func() bool {
		send("r3", "later")
		got = history("r3")
		return len(got) > 0
	})
	for _, text := range got {
		if text != "later" {
			t.Fatalf("r3's history after the others expired: %q", got)
		}
	}
}
