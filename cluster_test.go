package moonwire_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/internal/moontest"
)

// networkBrokers are the broker kinds that cross process boundaries, with
// the server this machine (and CI) runs for them.
var networkBrokers = []struct{ kind, url, addr string }{
	{"redis", "redis://127.0.0.1:6379/0", "127.0.0.1:6379"},
	{"nats", "nats://127.0.0.1:4222", "127.0.0.1:4222"},
}

// clusterFiles is a room script on a config whose broker is kind at url,
// with a prefix of its own so that parallel tests do not hear each other.
func clusterFiles(t *testing.T, kind, url, addr string) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Skipf("no %s at %s (%v): the cluster tests need it running", kind, addr, err)
	}
	_ = c.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	cleanBroker(t, kind, url, "t"+hex.EncodeToString(b))
	return moontest.Files(fmt.Sprintf(`
[admin]
listen = "127.0.0.1:0"

[broker]
kind = %q
url = %q
prefix = "t%s"
presence_ttl = "1500ms"

[store]
kind = %[1]q

[[routes]]
path = "/room"
script = "room.lua"
`, kind, url, hex.EncodeToString(b)), "scripts/room.lua", `
local M = {}
function M.on_open(conn) conn:join("r"); conn:send("id " .. conn.id) end
function M.on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "all" then ws.broadcast("r", arg, { except = conn })
  elseif cmd == "to" then
    local id, text = arg:match("^(%S+)%s+(.*)$")
    ws.send(id, text)
  elseif cmd == "kick" then ws.close(arg, 4003, "kicked")
  elseif cmd == "incr" then
    local n, err = store.incr("hits")
    conn:send("incr " .. tostring(n or err))
  elseif cmd == "get" then conn:send("get " .. tostring(store.get("hits")))
  elseif cmd == "name" then conn:presence({ name = arg }); conn:send("named")
  elseif cmd == "enter" then
    if arg == "" then conn:join("j") else conn:join("j", { joined = "hi " .. arg, left = "bye " .. arg }) end
    conn:send("entered")
  elseif cmd == "exit" then conn:leave("j"); conn:send("exited")
  elseif cmd == "jall" then ws.broadcast("j", arg, { except = conn })
  elseif cmd == "size" then conn:send("size " .. ws.room_size("r") .. " " .. #ws.room_members("r"))
  elseif cmd == "who" then
    local names = {}
    for id, info in pairs(ws.presence("r")) do names[#names + 1] = info and info.name or "?" end
    table.sort(names)
    conn:send("who " .. table.concat(names, ","))
  end
end
return M
`)
}

// member is a client of one node, joined to room r.
type member struct {
	*moontest.Client
	id string
}

func join(t *testing.T, s *moontest.Server) member {
	t.Helper()
	c := moontest.Dial(t, s.URL("/room"))
	id, ok := strings.CutPrefix(c.Next().Text(), "id ")
	if !ok {
		t.Fatal("no id greeting")
	}
	return member{c, id}
}

// next returns the next data frame that is not a probe.
func (m member) next(t *testing.T) string {
	t.Helper()
	for {
		f := m.Next()
		if !strings.HasPrefix(f.Text(), "probe") {
			return f.Text()
		}
	}
}

// settle broadcasts probes from pub until every listener has heard one,
// which proves that every node's room subscription is in place.
func settle(t *testing.T, pub member, listeners ...member) {
	t.Helper()
	for i, l := range listeners {
		deadline := time.Now().Add(20 * time.Second)
		for n := 0; ; n++ {
			if time.Now().After(deadline) {
				t.Fatalf("listener %d never heard a probe", i)
			}
			pub.Send("all probe")
			if f, err := l.ReadFrame(100 * time.Millisecond); err == nil && f.Text() == "probe" {
				break
			}
		}
	}
}

// TestClusterOverNetworkBrokers runs three nodes over a real broker:
// every broadcast reaches every member on every node exactly once and in
// publish order, sends and closes by id cross nodes, and the broker shows
// in /healthz and /metrics.
func TestClusterOverNetworkBrokers(t *testing.T) {
	for _, nb := range networkBrokers {
		t.Run(nb.kind, func(t *testing.T) {
			t.Parallel()
			files := clusterFiles(t, nb.kind, nb.url, nb.addr)
			nodes := []*moontest.Server{moontest.Start(t, files), moontest.Start(t, files), moontest.Start(t, files)}
			var ms []member
			for _, n := range nodes {
				for range 2 {
					ms = append(ms, join(t, n))
				}
			}
			pub := ms[0]
			settle(t, pub, ms[2], ms[4])
			// Drain probes that are still in flight to every member.
			for _, m := range ms[1:] {
				for {
					if _, err := m.ReadFrame(200 * time.Millisecond); err != nil {
						break
					}
				}
			}
			const n = 300
			for i := range n {
				pub.Send("all " + strconv.Itoa(i))
			}
			pub.Send("all done")
			for k, m := range ms[1:] {
				for i := 0; ; i++ {
					got := m.next(t)
					if got == "done" {
						if i != n {
							t.Fatalf("member %d got %d of %d messages", k+1, i, n)
						}
						break
					}
					if got != strconv.Itoa(i) {
						t.Fatalf("member %d: message %d is %q (lost, duplicated or reordered)", k+1, i, got)
					}
				}
			}

			// A send and a close by id, from node 3 to a member of node 1.
			ms[5].Send("to " + ms[1].id + " direct")
			if got := ms[1].next(t); got != "direct" {
				t.Fatalf("send across nodes: got %q", got)
			}
			ms[5].Send("kick " + ms[1].id)
			ms[1].ExpectClose(4003, "kicked")

			code, body := get(t, "http://"+nodes[1].AdminAddr()+"/healthz")
			if code != 200 || !strings.Contains(body, `"broker":{"kind":"`+nb.kind+`","connected":true`) {
				t.Fatalf("/healthz: %d %s", code, body)
			}
			fams := scrape(t, nodes[0].AdminAddr())
			for name, min := range map[string]float64{
				"moonwire_broker_connected":       1,
				"moonwire_broker_publishes_total": n,
				"moonwire_broker_rooms":           1,
			} {
				if v, ok := value(fams, name, map[string]string{"broker": nb.kind}); !ok || v < min {
					t.Errorf("%s = %v (present %v), want at least %v", name, v, ok, min)
				}
			}
			if v, _ := value(fams, "moonwire_broker_outbox_drops_total", nil); v != 0 {
				t.Errorf("outbox drops %v", v)
			}
		})
	}
}

// TestClusterPresence: members set what they show; every node answers
// ws.presence, ws.room_size and ws.room_members for the whole cluster, and
// a node that stops takes its members out.
func TestClusterPresence(t *testing.T) {
	for _, nb := range networkBrokers {
		t.Run(nb.kind, func(t *testing.T) {
			t.Parallel()
			files := clusterFiles(t, nb.kind, nb.url, nb.addr)
			nodes := []*moontest.Server{moontest.Start(t, files), moontest.Start(t, files), moontest.Start(t, files)}
			var ms []member
			for i, n := range nodes {
				m := join(t, n)
				m.Send("name n" + strconv.Itoa(i))
				m.Expect("named")
				ms = append(ms, m)
			}
			// Presence writes are asynchronous: poll until every node agrees.
			agree := func(want, size string) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for _, m := range ms[:2] {
					for {
						m.Send("who")
						got := m.next(t)
						m.Send("size")
						sz := m.next(t)
						if got == want && sz == size {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("presence: %q and %q, want %q and %q", got, sz, want, size)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
			agree("who n0,n1,n2", "size 3 3")
			ms[2].Close(1000)
			agree("who n0,n1", "size 2 2")
		})
	}
}

// TestClusterJoinLeave: a member's joined and left messages reach the
// room's members on the other nodes, the left one whether it leaves or
// its connection closes.
func TestClusterJoinLeave(t *testing.T) {
	for _, nb := range networkBrokers {
		t.Run(nb.kind, func(t *testing.T) {
			t.Parallel()
			files := clusterFiles(t, nb.kind, nb.url, nb.addr)
			nodes := []*moontest.Server{moontest.Start(t, files), moontest.Start(t, files), moontest.Start(t, files)}
			ms := []member{join(t, nodes[0]), join(t, nodes[1]), join(t, nodes[2])}
			ms[0].Send("enter")
			ms[0].Expect("entered")
			// Node 0's subscription to "j" is in place once a broadcast
			// from another node reaches it.
			ms[1].Send("enter")
			ms[1].Expect("entered")
			deadline := time.Now().Add(20 * time.Second)
			for {
				ms[1].Send("jall probe")
				if f, err := ms[0].ReadFrame(100 * time.Millisecond); err == nil && f.Text() == "probe" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("node 0 never heard room j")
				}
			}
			ms[1].Send("exit")
			ms[1].Expect("exited")

			ms[1].Send("enter bea")
			ms[1].Expect("entered")
			if got := ms[0].next(t); got != "hi bea" {
				t.Fatalf("node 0 heard %q, want hi bea", got)
			}
			ms[2].Send("enter cy")
			ms[2].Expect("entered")
			if got := ms[0].next(t); got != "hi cy" {
				t.Fatalf("node 0 heard %q, want hi cy", got)
			}
			// Node 1's own subscription to "j" may not be in place yet: it
			// may or may not hear cy.
			ms[1].Send("exit")
			for got := ms[1].next(t); got != "exited"; got = ms[1].next(t) {
				if got != "hi cy" {
					t.Fatalf("node 1 heard %q", got)
				}
			}
			if got := ms[0].next(t); got != "bye bea" {
				t.Fatalf("node 0 heard %q, want bye bea", got)
			}
			ms[2].Close(1000)
			if got := ms[0].next(t); got != "bye cy" {
				t.Fatalf("node 0 heard %q, want bye cy", got)
			}
		})
	}
}

// TestPresenceOnOneNode: without a network broker, ws.presence and
// ws.room_size answer for this node.
func TestPresenceOnOneNode(t *testing.T) {
	t.Parallel()
	files := clusterFiles(t, "redis", "redis://127.0.0.1:6379/0", "127.0.0.1:6379")
	cfg := files["moonwire.toml"]
	files["moonwire.toml"] = cfg[:strings.Index(cfg, "[broker]")] + cfg[strings.Index(cfg, "[[routes]]"):]
	s := moontest.Start(t, files)
	a, b := join(t, s), join(t, s)
	a.Send("name ann")
	a.Expect("named")
	b.Send("who")
	b.Expect("who ?,ann")
	b.Send("size")
	b.Expect("size 2 2")
}

// TestClusterStore: 1,000 store.incr from three nodes at once, over a
// store every node shares, count exactly 1,000.
func TestClusterStore(t *testing.T) {
	for _, nb := range networkBrokers {
		t.Run(nb.kind, func(t *testing.T) {
			t.Parallel()
			files := clusterFiles(t, nb.kind, nb.url, nb.addr)
			nodes := []*moontest.Server{moontest.Start(t, files), moontest.Start(t, files), moontest.Start(t, files)}
			var wg sync.WaitGroup
			const clients, each = 12, 84 // 1,008: a few more than 1,000, evenly
			for i := range clients {
				m := join(t, nodes[i%3])
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						m.Send("incr")
					}
					for range each {
						if got := m.next(t); !strings.HasPrefix(got, "incr ") || strings.Contains(got, "store:") {
							t.Errorf("incr: %s", got)
							return
						}
					}
				}()
			}
			wg.Wait()
			m := join(t, nodes[2])
			m.Send("get")
			if got, want := m.next(t), fmt.Sprintf("get %d", clients*each); got != want {
				t.Fatalf("%s, want %s", got, want)
			}
		})
	}
}

// cleanBroker removes what a test left under prefix on the shared broker
// (JetStream streams and KV buckets, Redis keys) when it ends.
func cleanBroker(t *testing.T, kind, url, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch kind {
		case "nats":
			nc, err := natsgo.Connect(url)
			if err != nil {
				return
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return
			}
			names := js.StreamNames(ctx)
			var doomed []string
			for n := range names.Name() {
				if strings.HasPrefix(n, prefix+"_") || strings.HasPrefix(n, "KV_"+prefix+"_") {
					doomed = append(doomed, n)
				}
			}
			for _, n := range doomed {
				_ = js.DeleteStream(ctx, n)
			}
		case "redis":
			opts, err := goredis.ParseURL(url)
			if err != nil {
				return
			}
			c := goredis.NewClient(opts)
			defer c.Close()
			iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		}
	})
}
