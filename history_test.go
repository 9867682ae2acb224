package moonwire_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// historyScript: /room?since=N&epoch=E recovers, /room joins; every
// message a client sends is broadcast to "r" stamped with its offset, and
// the sender is told the offset and epoch.
const historyScript = `
local M = {}
function M.on_open(conn)
  local since = conn:query("since")
  if conn:query("pub") then conn:send("ready") return end
  if since then
    local ok, off, ep, why = conn:recover("r", since, conn:query("epoch"))
    conn:send(string.format("recover %s %s %s %s", tostring(ok), tostring(off), tostring(ep), tostring(why)))
  else
    conn:join("r")
    conn:send("joined")
  end
end
function M.on_message(conn, data)
  if data == "history" then
    local es, top, ep = ws.history("r", { since = 2, limit = 3 })
    local parts = {}
    for _, e in ipairs(es) do parts[#parts + 1] = e.offset .. "=" .. e.data end
    conn:send("history " .. top .. " " .. ep .. " " .. table.concat(parts, ","))
    return
  end
  local n, off, ep = ws.broadcast("r", json.encode({ t = data }), { stamp = true })
  conn:send("pub " .. tostring(off) .. " " .. tostring(ep))
end
return M
`

// patient lets a test's broker calls take their time on a loaded
// machine: the recovery semantics are under test here, not the timing.
func patient(rc *router.Config) { rc.OffsetWait, rc.BrokerWait = time.Minute, time.Minute }

func historyFiles(t *testing.T, brokerTable string) map[string]string {
	return moontest.Files(brokerTable+`
[scripts]
handler_timeout = "2m"

[history]
"r" = { size = 50, ttl = "10m" }

[[routes]]
path = "/room"
script = "room.lua"
`, "scripts/room.lua", historyScript)
}

// publisher is a client whose messages are broadcast with history.
type publisher struct {
	*moontest.Client
}

func newPublisher(t *testing.T, s *moontest.Server) publisher {
	c := moontest.Dial(t, s.URL("/room?pub=1"))
	c.Expect("ready")
	return publisher{c}
}

// pub broadcasts text and returns its offset and epoch.
func (p publisher) pub(t *testing.T, text string) (uint64, string) {
	t.Helper()
	p.Send(text)
	var off uint64
	var ep string
	if _, err := fmt.Sscanf(p.Next().Text(), "pub %d %s", &off, &ep); err != nil {
		t.Fatalf("pub %q: %v", text, err)
	}
	return off, ep
}

// expectRun reads messages "TEXT@OFFSET" and checks their offsets run
// from first to last with no gap and no duplicate.
func expectRun(t *testing.T, c *moontest.Client, first, last uint64) {
	t.Helper()
	for want := first; want <= last; want++ {
		got := c.Next().Text()
		if strings.HasPrefix(got, "recover true ") {
			want-- // the script's answer, after the replay
			continue
		}
		if off := offsetOf(got); off != want {
			t.Fatalf("got %q, want offset %d", got, want)
		}
	}
}

// offsetOf reads the offset a stamped message carries; 0: none.
func offsetOf(msg string) uint64 {
	var m struct{ Offset uint64 }
	_ = json.Unmarshal([]byte(msg), &m)
	return m.Offset
}

// historyNodes returns two nodes sharing a broker of each kind this
// machine runs, and one memory node twice (a single node).
func historyNodes(t *testing.T) map[string][2]*moontest.Server {
	out := map[string][2]*moontest.Server{}
	one := moontest.Start(t, historyFiles(t, ""), patient)
	out["memory"] = [2]*moontest.Server{one, one}
	for _, nb := range networkBrokers {
		files := clusterFiles(t, nb.kind, nb.url, nb.addr) // skips without the broker
		brk := files["moonwire.toml"]
		brk = brk[strings.Index(brk, "[broker]"):strings.Index(brk, "[[routes]]")]
		f := historyFiles(t, brk)
		out[nb.kind] = [2]*moontest.Server{moontest.Start(t, f, patient), moontest.Start(t, f, patient)}
	}
	return out
}

// TestHistoryRecovery: a client that leaves and comes back, on the same
// node or another, with its offset and epoch gets exactly what it
// missed, then live messages; a wrong epoch or an offset trimmed away
// is answered so that the client reloads.
func TestHistoryRecovery(t *testing.T) {
	t.Parallel()
	for kind, nodes := range historyNodes(t) {
		t.Run(kind, func(t *testing.T) {
			a, b := nodes[0], nodes[1]
			p := newPublisher(t, a)
			sub := moontest.Dial(t, b.URL("/room"))
			sub.Expect("joined")
			// The subscription of b's room may take a moment on a network
			// broker: publish until sub hears one, then read from there.
			var start uint64
			var epoch string
			deadline := time.Now().Add(20 * time.Second)
			for start == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the subscriber never heard a message")
				}
				off, ep := p.pub(t, "warm")
				epoch = ep
				if f, err := sub.ReadFrame(200 * time.Millisecond); err == nil {
					n := offsetOf(f.Text())
					if n == 0 {
						t.Fatalf("unexpected %q", f.Text())
					}
					start = n
					expectRun(t, sub, n+1, off) // the rest of the warm-up
				}
			}
			last, _ := p.pub(t, "m")
			expectRun(t, sub, last, last)
			sub.Close(1000)

			// Missed while away.
			for range 5 {
				p.pub(t, "missed")
			}
			back := moontest.Dial(t, b.URL(fmt.Sprintf("/room?since=%d&epoch=%s", last, epoch)))
			// The replay is queued by conn:recover, before what the script
			// sends afterwards.
			expectRun(t, back, last+1, last+5)
			back.Expect(fmt.Sprintf("recover true %d %s nil", last+5, epoch))
			off, _ := p.pub(t, "live")
			expectRun(t, back, off, off)

			// Recovery while the publisher keeps publishing: no gap and no
			// duplicate across the replay/live boundary.
			back.Close(1000)
			from := off
			var wg sync.WaitGroup
			wg.Add(1)
			pubs := make(chan uint64, 1)
			go func() {
				defer wg.Done()
				var o uint64
				for range 40 {
					o, _ = p.pub(t, "race")
				}
				pubs <- o
			}()
			// Several at once, on both nodes: joining and the replay's start
			// must be one step, or a live message overtakes the replay.
			var again []*moontest.Client
			for i := range 6 {
				again = append(again, moontest.Dial(t, nodes[i%2].URL(fmt.Sprintf("/room?since=%d&epoch=%s", from, epoch))))
			}
			wg.Wait()
			lastPub := <-pubs
			for _, c := range again {
				expectRun(t, c, from+1, lastPub)
			}

			// A client with another epoch, or further back than the
			// history keeps (50), must reload.
			for range 60 {
				p.pub(t, "filler")
			}
			bad := moontest.Dial(t, b.URL("/room?since=3&epoch=other"))
			top := fmt.Sprint(from + 100)
			bad.Expect("recover false " + top + " " + epoch + " epoch")
			old := moontest.Dial(t, b.URL(fmt.Sprintf("/room?since=%d&epoch=%s", from, epoch)))
			old.Expect("recover false " + top + " " + epoch + " trimmed")

			// ws.history reads it.
			p.Send("history")
			if got := p.Next().Text(); !strings.HasPrefix(got, "history "+top+" "+epoch+" ") || strings.Count(got, "=") != 3 {
				t.Fatalf("ws.history: %s", got)
			}
		})
	}
}
