package moonwire_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

const apiKey = "backend-key-0123456789abcdef"

// apiScript joins every connection to the room its path names (/r/{room})
// and greets it with its id; "name X" sets its presence.
const apiScript = `
local M = {}
function M.on_open(conn) conn:join(conn.params.room); conn:send("id " .. conn.id) end
function M.on_message(conn, data)
  local name = data:match("^name (.*)$")
  if name then conn:presence({ name = name }); conn:send("named") end
end
return M
`

func apiConfig(extra string) string {
	return extra + `
[api]
listen = "127.0.0.1:0"
keys = ["` + apiKey + `"]

[[routes]]
path = "/r/{room}"
script = "room.lua"
`
}

// apiCall posts body to the API at addr and decodes the answer.
func apiCall(t testing.TB, client *http.Client, addr, cmd, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/"+cmd, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %d %q: %v", cmd, resp.StatusCode, b, err)
	}
	return resp.StatusCode, m
}

// greeted dials path and returns the client and its connection id.
func greeted(t *testing.T, s *moontest.Server, path string) (*moontest.Client, string) {
	t.Helper()
	c := moontest.Dial(t, s.URL(path))
	id, ok := strings.CutPrefix(c.Next().Text(), "id ")
	if !ok {
		t.Fatal("no id greeting")
	}
	return c, id
}

// TestAPIPublishWithHistory: a publish into a room with [history] returns
// the offset and epoch the members see (stamped), and history reads them
// back, text and binary.
func TestAPIPublishWithHistory(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(apiConfig(`
[history]
"news" = { size = 10, ttl = "10m" }
`), "scripts/room.lua", apiScript), patient)
	c, _ := greeted(t, s, "/r/news")
	addr := s.APIAddr()

	code, m := apiCall(t, nil, addr, "publish", `{"room":"news","data":"{\"title\":\"one\"}","stamp":true}`)
	epoch, _ := m["epoch"].(string)
	if code != 200 || m["delivered"] != 1.0 || m["offset"] != 1.0 || epoch == "" {
		t.Fatalf("publish: %d %v", code, m)
	}
	c.Expect(`{"offset":1,"epoch":"` + epoch + `","title":"one"}`)
	code, m = apiCall(t, nil, addr, "publish", `{"room":"news","binary":"3q2+7w=="}`)
	if code != 200 || m["offset"] != 2.0 || m["epoch"] != epoch {
		t.Fatalf("publish binary: %d %v", code, m)
	}
	c.ExpectBinary([]byte{0xde, 0xad, 0xbe, 0xef})
	for i := 3; i <= 12; i++ {
		if code, m := apiCall(t, nil, addr, "publish", `{"room":"news","data":"m`+strconv.Itoa(i)+`"}`); code != 200 || m["offset"] != float64(i) {
			t.Fatalf("publish %d: %d %v", i, code, m)
		}
		c.Expect("m" + strconv.Itoa(i))
	}

	code, m = apiCall(t, nil, addr, "history", `{"room":"news","since":9,"limit":2}`)
	if code != 200 || m["offset"] != 12.0 || m["epoch"] != epoch || fmt.Sprint(m["entries"]) != "[map[data:m10 offset:10] map[data:m11 offset:11]]" {
		t.Fatalf("history: %d %v", code, m)
	}
	// The room keeps 10: offsets 3..12, the binary one trimmed.
	code, m = apiCall(t, nil, addr, "history", `{"room":"news"}`)
	if es, _ := m["entries"].([]any); code != 200 || len(es) != 10 || fmt.Sprint(es[0]) != "map[data:m3 offset:3]" {
		t.Fatalf("history: %d %v", code, m)
	}
	code, m = apiCall(t, nil, addr, "history", `{"room":"news","since":1,"limit":1}`)
	if code != 200 || fmt.Sprint(m["entries"]) != "[map[data:m3 offset:3]]" {
		t.Fatalf("history since a trimmed offset: %d %v", code, m)
	}
}

// TestAPIBinaryHistory: binary entries come back base64.
func TestAPIBinaryHistory(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(apiConfig(`
[history]
"b" = { size = 5 }
`), "scripts/room.lua", apiScript), patient)
	addr := s.APIAddr()
	apiCall(t, nil, addr, "publish", `{"room":"b","binary":"AAE="}`)
	code, m := apiCall(t, nil, addr, "history", `{"room":"b"}`)
	if code != 200 || fmt.Sprint(m["entries"]) != "[map[binary:AAE= offset:1]]" {
		t.Fatalf("history: %d %v", code, m)
	}
}

// TestAPIReload: a reload changes the keys at once; the listener's
// address cannot change live.
func TestAPIReload(t *testing.T) {
	t.Parallel()
	cfg := func(key, listen string) string {
		return `
[scripts]
reload = false

[api]
listen = "` + listen + `"
keys = ["` + key + `"]

[[routes]]
path = "/r/{room}"
script = "room.lua"
`
	}
	s := moontest.Start(t, moontest.Files(cfg(apiKey, "127.0.0.1:0"), "scripts/room.lua", apiScript))
	if code, _ := apiCall(t, nil, s.APIAddr(), "rooms", `{}`); code != 200 {
		t.Fatalf("before: %d", code)
	}
	newKey := "rotated-key-0123456789abcdef"
	s.WriteFile(t, "moonwire.toml", cfg(newKey, "127.0.0.1:0"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _ := apiCall(t, nil, s.APIAddr(), "rooms", `{}`); code != 401 {
		t.Errorf("old key after the reload: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.APIAddr()+"/api/rooms", strings.NewReader("{}"))
	req.Header.Set("Authorization", "apikey "+newKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("new key after the reload: %d", resp.StatusCode)
	}
	if st := s.Status(); !strings.Contains(strings.Join(st.Server, " "), "api.keys") {
		t.Errorf("reload settings %v, want api.keys", st.Server)
	}
	if strings.Contains(s.Logs(), newKey) || strings.Contains(s.Logs(), apiKey) {
		t.Error("a key shows in the log")
	}

	s.WriteFile(t, "moonwire.toml", cfg(newKey, "127.0.0.1:1"))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "reload not supported for api.listen: old=127.0.0.1:0, new=127.0.0.1:1") {
		t.Errorf("listen change: %v", err)
	}
}

// TestAPIOnCluster: three nodes over Redis, two members of room r on
// each; 8 goroutines publish 200 messages each through the APIs of
// different nodes at once, and every member on every node gets every
// message exactly once, in order per goroutine. Then send, close, size,
// presence and conn across nodes.
func TestAPIOnCluster(t *testing.T) {
	t.Parallel()
	const url, addr = "redis://127.0.0.1:6379/0", "127.0.0.1:6379"
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		t.Skipf("no redis at %s (%v): the cluster tests need it running", addr, err)
	} else {
		_ = c.Close()
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "t" + hex.EncodeToString(b)
	cleanBroker(t, "redis", url, prefix)
	files := moontest.Files(apiConfig(`
[broker]
kind = "redis"
url = "`+url+`"
prefix = "`+prefix+`"
presence_ttl = "1500ms"
`), "scripts/room.lua", apiScript)
	nodes := []*moontest.Server{moontest.Start(t, files), moontest.Start(t, files), moontest.Start(t, files)}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	type member struct {
		c    *moontest.Client
		id   string
		node int
	}
	var ms []member
	for i, n := range nodes {
		for range 2 {
			c, id := greeted(t, n, "/r/r")
			ms = append(ms, member{c, id, i})
		}
	}
	// Each node's subscription to r is made asynchronously: publish
	// probes until every member has heard one, then drain the rest.
	for i, m := range ms {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if time.Now().After(deadline) {
				t.Fatalf("member %d never heard a probe", i)
			}
			apiCall(t, client, nodes[i%3].APIAddr(), "publish", `{"room":"r","data":"probe"}`)
			if f, err := m.c.ReadFrame(100 * time.Millisecond); err == nil && f.Text() == "probe" {
				break
			}
		}
	}
	for _, m := range ms {
		for {
			if _, err := m.c.ReadFrame(300 * time.Millisecond); err != nil {
				break
			}
		}
	}

	const pubs, each = 8, 200
	var wg sync.WaitGroup
	errs := make(chan string, pubs)
	for g := range pubs {
		wg.Go(func() {
			api := nodes[g%3].APIAddr()
			for i := range each {
				body := fmt.Sprintf(`{"room":"r","data":"%d:%d"}`, g, i)
				req, _ := http.NewRequest(http.MethodPost, "http://"+api+"/api/publish", strings.NewReader(body))
				req.Header.Set("Authorization", "apikey "+apiKey)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"delivered":2`)) {
					errs <- fmt.Sprintf("publisher %d message %d: %d %s", g, i, resp.StatusCode, b)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	for k, m := range ms {
		next := make([]int, pubs)
		for got := 0; got < pubs*each; {
			f := m.c.Next()
			if f.Text() == "probe" {
				continue
			}
			var g, i int
			if _, err := fmt.Sscanf(f.Text(), "%d:%d", &g, &i); err != nil || g < 0 || g >= pubs {
				t.Fatalf("member %d: unexpected %q", k, f.Text())
			}
			if i != next[g] {
				t.Fatalf("member %d (node %d): publisher %d's message %d arrived when %d was due (lost, duplicated or reordered)", k, m.node, g, i, next[g])
			}
			next[g]++
			got++
		}
		for {
			f, err := m.c.ReadFrame(200 * time.Millisecond)
			if err != nil {
				break
			}
			if (f.Op == ws.OpText || f.Op == ws.OpBinary) && f.Text() != "probe" {
				t.Fatalf("member %d: extra message %q", k, f.Text())
			}
		}
	}

	// Across nodes: node 2's API reaches node 0's members.
	a2 := nodes[2].APIAddr()
	if code, m := apiCall(t, client, a2, "send", `{"conn":"`+ms[0].id+`","data":"direct"}`); code != 200 || m["sent"] != true {
		t.Fatalf("send across nodes: %d %v", code, m)
	}
	ms[0].c.Expect("direct")
	if code, m := apiCall(t, client, a2, "conn", `{"conn":"`+ms[0].id+`"}`); code != 200 || m["node"] != nodes[0].Router.NodeID() || m["local"] != false || m["conn"] != nil {
		t.Errorf("conn of another node: %d %v", code, m)
	}
	if code, m := apiCall(t, client, nodes[0].APIAddr(), "conn", `{"conn":"`+ms[0].id+`"}`); code != 200 || m["local"] != true || m["conn"].(map[string]any)["id"] != ms[0].id {
		t.Errorf("conn on its node: %d %v", code, m)
	}
	// A publish leaving out a member of another node.
	if code, m := apiCall(t, client, a2, "publish", `{"room":"r","data":"not you","except":"`+ms[1].id+`"}`); code != 200 || m["delivered"] != 2.0 {
		t.Fatalf("publish except: %d %v", code, m)
	}
	for k, m := range ms {
		if k != 1 {
			m.c.Expect("not you")
		}
	}
	ms[3].c.Send("name three")
	ms[3].c.Expect("named")
	moontest.WaitFor(t, "the cluster's size and presence", func() bool {
		_, sz := apiCall(t, client, a2, "room_size", `{"room":"r"}`)
		_, pr := apiCall(t, client, nodes[0].APIAddr(), "presence", `{"room":"r"}`)
		p, _ := pr["presence"].(map[string]any)
		return sz["size"] == 6.0 && len(p) == 6 && fmt.Sprint(p[ms[3].id]) == "map[name:three]"
	})
	if code, m := apiCall(t, client, a2, "close", `{"conn":"`+ms[1].id+`","code":4003,"reason":"kicked"}`); code != 200 || m["closed"] != true {
		t.Fatalf("close across nodes: %d %v", code, m)
	}
	ms[1].c.ExpectClose(4003, "kicked")
	if code, m := apiCall(t, client, nodes[0].APIAddr(), "rooms", `{}`); code != 200 || fmt.Sprint(m["rooms"]) != "[map[members:1 room:r]]" {
		t.Errorf("rooms of node 0: %d %v", code, m)
	}
}
