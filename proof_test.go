package moonwire_test

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// The reload proof: chat clients exchange messages while the route's script
// is rewritten over and over, alternating valid and broken versions. The
// default sizes keep the suite quick; the figures in the README come from
// examples/reload/proof.sh, which runs
//
//	go test . -run TestReloadUnderLoad -v -reload.clients=1000 -reload.rewrites=100 -reload.via=watch
var (
	proofClients  = flag.Int("reload.clients", 100, "chat clients in the reload proof")
	proofRewrites = flag.Int("reload.rewrites", 30, "script rewrites in the reload proof (half of them broken)")
	proofInterval = flag.Duration("reload.interval", 20*time.Millisecond, "time between rewrites (clients keep chatting meanwhile)")
	proofVia      = flag.String("reload.via", "call", `how rewrites are applied: "call" (Node.Reload, as SIGHUP does) or "watch" (the file watcher picks up the saved file)`)
	proofRoomSize = flag.Int("reload.room", 25, "clients per chat room")
)

func proofScript(version string) string {
	return fmt.Sprintf(`
local V = %q
local M = {}
function M.on_open(conn) conn:join(conn:query("room")) end
function M.on_message(conn, data)
  if data == "probe" then conn:send("probe " .. V) return end
  ws.broadcast(conn:query("room"), V .. "|" .. data, { except = conn })
end
return M
`, version)
}

func brokenScript(i int) string {
	if i%4 == 1 {
		return fmt.Sprintf("local M = {}\nfunction M.on_message(conn, data)\n  conn:send(\"broken b%d\"\nend\nreturn M\n", i)
	}
	return fmt.Sprintf("error(\"broken version b%d\")\nreturn {}\n", i)
}

func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	nClients, nRewrites, roomSize := *proofClients, *proofRewrites, *proofRoomSize
	s := moontest.Start(t, moontest.Files(`
[server]
write_queue = "4MiB"

[heartbeat]
interval = "30s"
timeout = "120s"

# The proof is about reloads; on a loaded 2-core machine under the race
# detector a broadcast can stall past the default 1s, which is not what
# this test measures.
[scripts]
handler_timeout = "30s"

[[routes]]
path = "/chat"
script = "chat.lua"
`, "scripts/chat.lua", proofScript("v0")))

	type client struct {
		c    *moontest.Client
		id   int
		room int
		sent int // messages sent; final once the writers are done
		// received[sender] = last seq seen from that sender
		received map[int]int
		versions map[string]int
		target   atomic.Int64 // messages to receive; known when writers stop
		// One error per goroutine: the reader and the writer each own
		// theirs (they used to share one field, a data race).
		readErr, writeErr error
	}
	clients := make([]*client, nClients)
	for i := range clients {
		room := i / roomSize
		clients[i] = &client{
			c:        moontest.Dial(t, s.URL(fmt.Sprintf("/chat?room=r%d", room))),
			id:       i,
			room:     room,
			received: map[int]int{},
			versions: map[string]int{},
		}
		clients[i].target.Store(math.MaxInt64)
	}
	moontest.WaitFor(t, "every client to join", func() bool { return s.Router.Stats().Connections == int64(nClients) })
	// Readers: each counts what it receives and checks order per sender.
	var readers sync.WaitGroup
	for _, cl := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			got := int64(0)
			for got < cl.target.Load() {
				f, err := cl.c.ReadFrame(60 * time.Second)
				if err != nil {
					cl.readErr = fmt.Errorf("client %d after %d messages: %w", cl.id, got, err)
					return
				}
				if f.Op == ws.OpPing {
					continue
				}
				if f.Op != ws.OpText {
					cl.readErr = fmt.Errorf("client %d: unexpected %v %q", cl.id, f.Op, f.Payload)
					return
				}
				if strings.HasPrefix(f.Text(), "probe ") {
					continue // the wake-up at the end
				}
				var v string
				var from, seq int
				if _, err := fmt.Sscanf(strings.ReplaceAll(f.Text(), "|", " "), "%s %d %d", &v, &from, &seq); err != nil {
					cl.readErr = fmt.Errorf("client %d: bad message %q", cl.id, f.Text())
					return
				}
				if seq != cl.received[from]+1 {
					cl.readErr = fmt.Errorf("client %d: from %d got seq %d after %d (lost or duplicated)", cl.id, from, seq, cl.received[from])
					return
				}
				cl.received[from] = seq
				cl.versions[v]++
				got++
			}
		}()
	}

	// Writers: every client keeps chatting until the rewrites are over.
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for _, cl := range clients {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(cl.id), 1))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(50+rng.IntN(100)) * time.Millisecond):
				}
				if err := cl.c.WriteFrame(ws.OpText, true, []byte(fmt.Sprintf("%d|%d", cl.id, cl.sent+1))); err != nil {
					cl.writeErr = fmt.Errorf("client %d: write: %w", cl.id, err)
					return
				}
				cl.sent++
			}
		}()
	}

	// With -reload.via=watch the file watcher applies each save; a save may
	// cause more than one reload (editors and renames make bursts), so the
	// checks below look at outcomes, not counts.
	if *proofVia == "watch" {
		ctx, cancel := context.WithCancel(context.Background())
		watching, err := s.Watch(ctx, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); <-watching }()
	}
	probe := moontest.Dial(t, s.URL("/chat?room=probe"))
	// serving asks the route which version answers.
	serving := func() string {
		probe.Send("probe")
		return strings.TrimPrefix(probe.Next().Text(), "probe ")
	}

	// Rewrites, alternating valid and broken. After a valid one the probe
	// must see the new version; after a broken one the reload must have
	// failed and the previous version must still answer.
	validSeen, current := 0, "v0"
	for i := 1; i <= nRewrites; i++ {
		failures := s.Status().Failures
		if i%2 == 1 {
			v := fmt.Sprintf("v%d", i)
			s.WriteFile(t, "scripts/chat.lua", proofScript(v))
			if *proofVia == "call" {
				if err := s.Reload(); err != nil {
					t.Fatalf("valid rewrite %d: %v", i, err)
				}
			}
			moontest.WaitFor(t, "version "+v+" to serve", func() bool { return serving() == v })
			validSeen++
			current = v
		} else {
			s.WriteFile(t, "scripts/chat.lua", brokenScript(i))
			if *proofVia == "call" {
				if err := s.Reload(); err == nil {
					t.Fatalf("broken rewrite %d was accepted", i)
				}
			}
			moontest.WaitFor(t, fmt.Sprintf("broken rewrite %d to be refused", i), func() bool {
				return s.Status().Failures > failures
			})
			if got := serving(); got != current {
				t.Fatalf("after broken rewrite %d the route serves %q, want %q", i, got, current)
			}
		}
		time.Sleep(*proofInterval) // let the chat run on this version
	}
	close(stop)
	writers.Wait()
	sent := 0
	for _, cl := range clients {
		want := 0
		for _, o := range clients {
			if o.room == cl.room && o != cl {
				want += o.sent
			}
		}
		sent += cl.sent
		cl.target.Store(int64(want))
	}
	// A reader that has everything may be blocked waiting for more: a
	// probe, answered to its sender only, wakes it to see its target.
	for _, cl := range clients {
		if err := cl.c.WriteFrame(ws.OpText, true, []byte("probe")); err != nil {
			t.Fatal(err)
		}
	}
	readers.Wait()

	delivered, versions := 0, map[string]int{}
	for _, cl := range clients {
		if err := cmp.Or(cl.writeErr, cl.readErr); err != nil {
			t.Fatal(err)
		}
		for v, n := range cl.versions {
			versions[v] += n
			delivered += n
		}
		for _, o := range clients {
			if o.room == cl.room && o != cl && cl.received[o.id] != o.sent {
				t.Fatalf("client %d got %d/%d messages from %d", cl.id, cl.received[o.id], o.sent, o.id)
			}
		}
	}
	for v := range versions {
		if strings.HasPrefix(v, "b") {
			t.Fatalf("a broken version served: %s", v)
		}
	}
	st := s.Router.Stats()
	if st.Connections != int64(nClients)+1 {
		t.Fatalf("%d connections at the end, want %d: some were dropped", st.Connections, nClients+1)
	}
	status := s.Status()
	t.Logf("clients=%d rewrites=%d (valid %d, broken %d) reloads ok=%d failed=%d", nClients, nRewrites, validSeen, nRewrites-validSeen, status.Reloads, status.Failures)
	t.Logf("messages sent=%d delivered=%d lost=0 duplicated=0 dropped connections=0; versions seen in deliveries=%d, every valid version seen by the probe=%d/%d",
		sent, delivered, len(versions), validSeen, (nRewrites+1)/2)
}
