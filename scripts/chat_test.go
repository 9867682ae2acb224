package scripts_test

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router/config"
	"github.com/moonwire/moonwire/scripts"
)

// say sends text to room (a /chat/... path) and returns once the message
// has been handled: chat.lua stores it before broadcasting it, and a second
// member receives the broadcast.
func say(t *testing.T, s *moontest.Server, room, text string) {
	t.Helper()
	listener := moontest.Dial(t, s.URL("/chat/"+room))
	skipHistory(t, listener)
	speaker := moontest.Dial(t, s.URL("/chat/"+room))
	skipHistory(t, speaker)
	speaker.Send(text)
	for {
		// Joins and leaves (the previous say's, too) may come first.
		m := decode(t, listener.Next())
		if m["type"] == "message" {
			if m["text"] != text {
				t.Fatalf("%s: got %v, want the message %.20q", room, m, text)
			}
			break
		}
	}
	speaker.Close(1000)
	listener.Close(1000)
}

// skipHistory reads a newcomer's replayed history. chat.lua replays it
// before the connection joins the room, so the first frame that is not a
// message (its own join, or a join or leave of another member) means the
// connection is in the room.
func skipHistory(t *testing.T, c *moontest.Client) {
	t.Helper()
	for decode(t, c.Next())["type"] == "message" {
	}
}

// historyOf returns the texts a newcomer to room is replayed.
func historyOf(t *testing.T, s *moontest.Server, room string) []string {
	t.Helper()
	c := moontest.Dial(t, s.URL("/chat/"+room))
	defer c.Close(1000)
	var texts []string
	for {
		m := decode(t, c.Next())
		if m["type"] != "message" {
			return texts
		}
		texts = append(texts, m["text"].(string))
	}
}

// TestChatRoomLimitScansNothing: once history_rooms rooms keep history,
// a message to another room is relayed without walking the store. chat.lua
// used to call store.keys (every key, under the store's lock, sorted) for
// each such message: 2,000 messages took 1.2 s instead of 0.06 s, and
// every route's store calls waited on the walk.
func TestChatRoomLimitScansNothing(t *testing.T) {
	t.Parallel()
	chat, err := fs.ReadFile(scripts.FS, "chat.lua")
	if err != nil {
		t.Fatal(err)
	}
	s := moontest.Start(t, moontest.Files(`
[scripts]
dir = "."

[[routes]]
path = "/chat/{room}"
script = "counted.lua"
settings = { history = 5, history_rooms = 2 }

[[routes]]
path = "/keys"
script = "keys.lua"
`,
		"chat.lua", string(chat),
		// chat.lua, with every store.keys call counted.
		"counted.lua", `
local keys = store.keys
store.keys = function(...)
  store.incr("test:keys_calls", 1)
  return keys(...)
end
return require "chat"
`,
		"keys.lua", `
return { on_open = function(conn) conn:send(tostring(store.get("test:keys_calls") or 0)) end }
`))
	say(t, s, "r1", "one")
	say(t, s, "r2", "two")
	before := moontest.Dial(t, s.URL("/keys")).Next().Text()
	for i := range 20 {
		say(t, s, "r3", "three "+strconv.Itoa(i)) // relayed, not kept
	}
	after := moontest.Dial(t, s.URL("/keys")).Next().Text()
	if before != after {
		t.Errorf("store.keys calls went from %s to %s over 20 messages to a room past history_rooms, want none", before, after)
	}
	if got := historyOf(t, s, "r3"); len(got) != 0 {
		t.Errorf("r3's history: %q, want none (room limit)", got)
	}
	if got := strings.Join(historyOf(t, s, "r1"), ","); got != "one" {
		t.Errorf("r1's history: %q", got)
	}
}

// TestChatDefaultsFitTheStore: the history chat.lua keeps with the default
// config must fit well inside the store budget that every route shares.
// With history_rooms defaulting to 1,000, 20 messages of 4 KiB per room
// came to about 80 MiB, past the 64 MiB [store] max_bytes: one client
// filled the store and rooms kept 14-15 of their 20 messages.
func TestChatDefaultsFitTheStore(t *testing.T) {
	t.Parallel()
	s := startDefault(t, nil)
	const rooms = 100 // the default history_rooms
	// The biggest room: 20 messages just under history_max_bytes (4096
	// bytes of JSON), plus one more to see the oldest go.
	big := func(i int) string { return fmt.Sprintf("%02d%s", i, strings.Repeat("x", 3900)) }
	start := s.Store.Bytes()
	for i := range 21 {
		say(t, s, "big", big(i))
	}
	if got := historyOf(t, s, "big"); len(got) != 20 || got[0] != big(1) || got[19] != big(20) {
		t.Fatalf("the big room replays %d messages, want the last 20", len(got))
	}
	perRoom := s.Store.Bytes() - start
	cfg, err := config.LoadFS(scripts.FS, scripts.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	if budget := cfg.Store.MaxBytes; rooms*perRoom > budget/4 {
		t.Errorf("%d full rooms take %d bytes of the store (%d per room), want at most a quarter of its %d",
			rooms, rooms*perRoom, perRoom, budget)
	}
	// The room limit is 100: the rooms past it keep nothing.
	for i := 2; i <= rooms; i++ {
		say(t, s, "room"+strconv.Itoa(i), "hi")
	}
	say(t, s, "one-too-many", "hi")
	if got := historyOf(t, s, "one-too-many"); len(got) != 0 {
		t.Errorf("room %d keeps history %q, want none (history_rooms defaults to %d)", rooms+1, got, rooms)
	}
	if got := historyOf(t, s, "room"+strconv.Itoa(rooms)); len(got) != 1 {
		t.Errorf("room %d's history: %q, want its message", rooms, got)
	}
}

// TestChatStoreFullKeepsHistory: a message the full store cannot take is
// relayed but not kept, and the room's history stays as it was. chat.lua
// used to delete the oldest kept message anyway (and move the replay
// window past it), so a full store wore every room's history away.
func TestChatStoreFullKeepsHistory(t *testing.T) {
	t.Parallel()
	s := startDefault(t, func(cfg *config.Config) {
		settingsOf(cfg, "/chat/{room}")["history"] = int64(2)
		cfg.Store.MaxBytes, cfg.Store.MaxValueSize = 2048, 2048
	})
	say(t, s, "r", "one")
	say(t, s, "r", "two")
	say(t, s, "r", strings.Repeat("x", 1500)) // does not fit: relayed only
	if got := strings.Join(historyOf(t, s, "r"), ","); got != "one,two" {
		t.Fatalf("history after a message the store could not take: %q, want one,two", got)
	}
	say(t, s, "r", "four")
	if got := strings.Join(historyOf(t, s, "r"), ","); got != "two,four" {
		t.Fatalf("history: %q, want two,four", got)
	}
}

// TestMonitorLogsDroppedReport: a report the store cannot take is logged
// (it used to vanish without a word).
func TestMonitorLogsDroppedReport(t *testing.T) {
	t.Parallel()
	s := startDefault(t, func(cfg *config.Config) {
		cfg.Store.MaxBytes, cfg.Store.MaxValueSize = 1024, 1024
	})
	c := moontest.Dial(t, s.URL("/monitor?token=monitor-token"))
	c.Send(`{"blob":"` + strings.Repeat("x", 2000) + `"}`)
	s.WaitLog(t, "level=WARN", "monitor: report not stored", "store: value too large")
}

// TestChatRecoversWithBrokerHistory: with [history] for the chat rooms,
// every message carries its offset and epoch, and a client that comes
// back with ?since= and ?epoch= gets exactly what it missed; one too far
// behind is told to reload.
func TestChatRecoversWithBrokerHistory(t *testing.T) {
	t.Parallel()
	s := startDefault(t, func(c *config.Config) {
		c.History = []config.HistoryRule{{Rooms: "*", Size: 5, TTL: config.DefaultHistoryTTL}}
	})
	a := moontest.Dial(t, s.URL("/chat/h"))
	join := decode(t, a.Next()) // its own join, stamped like everything else
	if join["type"] != "join" || join["offset"] != float64(1) || join["epoch"] == "" {
		t.Fatalf("first frame %v", join)
	}
	epoch := join["epoch"].(string)
	b := moontest.Dial(t, s.URL("/chat/h"))
	decode(t, b.Next()) // a's join, replayed
	decode(t, b.Next()) // its own join
	if m := decode(t, a.Next()); m["type"] != "join" || m["offset"] != float64(2) {
		t.Fatalf("b's join on a: %v", m)
	}
	b.Send("one")
	for _, c := range []*moontest.Client{a, b} { // the sender too
		if m := decode(t, c.Next()); m["text"] != "one" || m["offset"] != float64(3) {
			t.Fatalf("got %v", m)
		}
	}
	a.Close(1000)
	if m := decode(t, b.Next()); m["type"] != "leave" || m["offset"] != float64(4) {
		t.Fatalf("a's leave on b: %v", m)
	}
	b.Send("two")
	b.Send("three")
	for decode(t, b.Next())["text"] != "three" { // handled: b hears its own
	}
	back := moontest.Dial(t, s.URL(fmt.Sprintf("/chat/h?since=3&epoch=%s", epoch)))
	var got []string
	for len(got) < 4 {
		m := decode(t, back.Next())
		got = append(got, fmt.Sprintf("%v %v %v", m["type"], m["text"], m["offset"]))
	}
	if want := "[leave <nil> 4 message two 5 message three 6 join <nil> 7]"; fmt.Sprint(got) != want {
		t.Fatalf("recovered %v, want %s", got, want)
	}
	old := moontest.Dial(t, s.URL(fmt.Sprintf("/chat/h?since=0&epoch=%s", epoch)))
	if m := decode(t, old.Next()); m["type"] != "reload" || m["reason"] != "trimmed" || m["offset"] != float64(7) {
		t.Fatalf("a client too far behind got %v", m)
	}
}
