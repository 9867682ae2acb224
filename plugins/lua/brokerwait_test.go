package lua

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/broker"
	natsbroker "github.com/moonwire/moonwire/router/broker/nats"
	redisbroker "github.com/moonwire/moonwire/router/broker/redis"
)

// Broker waits that suspend the callback (brokerWait): tests against a
// real redis-server or nats-server this test starts on loopback, and
// SIGSTOPs to make the broker slow.

// waitDeadline bounds every wait for an event: generous, for the race
// detector on a loaded machine.
const waitDeadline = 25 * time.Second

// brokerProc is a private redis-server or nats-server.
type brokerProc struct {
	kind, url string
	cmd       *exec.Cmd
	stopped   bool
	mu        sync.Mutex
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// startBrokerProc starts kind ("redis" or "nats") on a free loopback
// port, skipping the test when it is not installed.
func startBrokerProc(t *testing.T, kind string) *brokerProc {
	t.Helper()
	port := freeLoopbackPort(t)
	var bin string
	var args []string
	switch kind {
	case "redis":
		bin, args = "redis-server", []string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no"}
	case "nats":
		bin, args = "nats-server", []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", t.TempDir()}
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		if path, err = exec.LookPath("/usr/sbin/" + bin); err != nil {
			t.Skipf("%s is not installed: this test starts its own", bin)
		}
	}
	p := &brokerProc{kind: kind, cmd: exec.Command(path, args...)}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		p.cont()
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
	scheme := map[string]string{"redis": "redis://", "nats": "nats://"}[kind]
	p.url = scheme + "127.0.0.1:" + port
	waitFor(t, bin+" listening", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	return p
}

// stop freezes the server (SIGSTOP): its clients' calls wait.
func (p *brokerProc) stop(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.stopped = true
	// The stop takes effect when each of the server's threads next
	// enters the kernel: wait until the process is seen stopped, so that
	// no request made from here on is answered.
	stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	waitFor(t, "the broker stopped", func() bool {
		b, err := os.ReadFile(stat)
		if err != nil {
			return true // no /proc: trust the signal
		}
		// pid (comm) STATE ...: comm may hold spaces, so read after ')'.
		i := strings.LastIndexByte(string(b), ')')
		return i > 0 && i+2 < len(b) && b[i+2] == 'T'
	})
}

// cont resumes a stopped server; it may run more than once.
func (p *brokerProc) cont() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.stopped = false
	}
}

// newNetBroker connects a broker of p's kind, with command timeouts far
// longer than the tests' stops: a call waits rather than fails.
func newNetBroker(t *testing.T, p *brokerProc) broker.Broker {
	t.Helper()
	opts := broker.Options{URL: p.url, Prefix: "bw" + freeLoopbackPort(t), Timeout: 40 * time.Second,
		Outbox: 1000, Logger: slog.New(slog.DiscardHandler)}
	var (
		b   broker.Broker
		err error
	)
	switch p.kind {
	case "redis":
		b, err = redisbroker.New(opts)
	case "nats":
		b, err = natsbroker.New(opts)
	}
	if err != nil {
		t.Fatalf("%s broker: %v", p.kind, err)
	}
	return b
}

// netServed is a route served with a network broker (brokerServed).
type netServed struct {
	url string
	eng *Engine
	srv *router.Server
	cfg router.Config
}

// brokerServed is script as the route /t on one VM (one lane: every
// connection meets the same one) of a server listening on loopback with
// b as its broker; rooms starting with "h" keep a history.
func brokerServed(t *testing.T, b broker.Broker, script string, wait time.Duration) string {
	t.Helper()
	return brokerServe(t, b, script, wait).url
}

// brokerServe is brokerServed, returning the parts a test reconfigures.
func brokerServe(t *testing.T, b broker.Broker, script string, wait time.Duration) *netServed {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	e := New(Options{Logger: log})
	r, err := e.NewRoute(RouteConfig{Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte(script)}}, Script: "t.lua",
		VMs: 1, HandlerTimeout: 10 * time.Second})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	cfg := router.Config{
		Routes: []router.RouteSpec{{Pattern: "/t", Handler: r}},
		Logger: log,
		Broker: b,
		History: func(room string) (int, time.Duration) {
			if strings.HasPrefix(room, "h") {
				return 1000, time.Minute
			}
			return 0, 0
		},
		OffsetWait: wait,
		BrokerWait: wait,
	}
	srv, err := router.New(cfg)
	if err != nil {
		r.Release()
		e.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		e.Close()
		_ = b.Close()
	})
	return &netServed{url: "ws://" + ln.Addr().String() + "/t", eng: e, srv: srv, cfg: cfg}
}

// wsClient is a real WebSocket client whose text messages arrive on msgs.
type wsClient struct {
	conn net.Conn
	msgs chan string
}

func dialWS(t *testing.T, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitDeadline)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	// Frames the server sent right behind its handshake answer may be
	// in br already.
	var rw io.ReadWriter = conn
	if br != nil {
		rw = struct {
			io.Reader
			io.Writer
		}{io.MultiReader(br, conn), conn}
	}
	c := &wsClient{conn: conn, msgs: make(chan string, 4096)}
	go func() {
		defer close(c.msgs)
		for {
			data, err := wsutil.ReadServerText(rw)
			if err != nil {
				return
			}
			c.msgs <- string(data)
		}
	}()
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

func (c *wsClient) send(t *testing.T, s string) {
	t.Helper()
	if err := wsutil.WriteClientText(c.conn, []byte(s)); err != nil {
		t.Fatalf("send %q: %v", s, err)
	}
}

// next returns the next message, failing the test past waitDeadline.
func (c *wsClient) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			t.Fatalf("%s: the connection closed", what)
		}
		return m
	case <-time.After(waitDeadline):
		t.Fatalf("%s: nothing within %v", what, waitDeadline)
	}
	return ""
}

// expect reads the next message and checks it.
func (c *wsClient) expect(t *testing.T, want string) {
	t.Helper()
	if got := c.next(t, "waiting for "+want); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

var brokerKinds = []string{"redis", "nats"}

const suspendScript = `
local M = {}
function M.on_open(conn)
  if conn:query("slow") then
    conn:send("waiting")
    local entries = ws.history("h1")
    conn:send("history " .. tostring(entries ~= nil))
    local ok = conn:recover("h1", 0, "")
    conn:send("recovered " .. tostring(ok))
    conn:send("size " .. type(ws.room_size("h1")))
  else
    conn:send("hello")
  end
end
function M.on_message(conn, data)
  if data == "pub" then
    local _, offset = ws.broadcast("h1", "x")
    conn:send("pub " .. tostring(offset))
    return
  end
  if data == "pcall" then
    -- Inside pcall a broker wait cannot suspend: it waits on the lane.
    local ok, entries = pcall(ws.history, "h1")
    conn:send("pcall " .. tostring(ok) .. " " .. type(entries))
    return
  end
  conn:send("echo " .. data)
end
return M
`

// TestBrokerWaitServesOtherConns: while one connection's on_open waits on
// a frozen broker (ws.history, conn:recover), its VM's only lane serves
// another connection; the waiting connection's own message is handled
// only after its on_open finished, in order.
func TestBrokerWaitServesOtherConns(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) {
			p := startBrokerProc(t, kind)
			url := brokerServed(t, newNetBroker(t, p), suspendScript, 30*time.Second)

			// Warm: the broker answers, so the route works.
			w := dialWS(t, url+"?slow=1")
			for _, m := range []string{"waiting", "history true", "recovered true", "size number", "pcall true table"} {
				if m == "pcall true table" {
					w.send(t, "pcall")
				}
				w.expect(t, m)
			}
			// A room with a stored message: on NATS a history read of a
			// stream that does not exist yet answers without asking.
			w.send(t, "pub")
			got := []string{w.next(t, "pub's answer"), w.next(t, "pub's broadcast")}
			slices.Sort(got)
			if got[0] != "pub 1" || got[1] != "x" {
				t.Fatalf("after pub: %q", got)
			}

			p.stop(t)
			a := dialWS(t, url+"?slow=1")
			a.expect(t, "waiting")
			a.send(t, "m1") // behind a's on_open, which waits

			b := dialWS(t, url)
			b.expect(t, "hello")
			b.send(t, "x")
			b.expect(t, "echo x")
			select {
			case m := <-a.msgs:
				t.Fatalf("a got %q while the broker was stopped", m)
			default:
			}

			p.cont()
			// recover replays the warm-up's "x".
			for _, m := range []string{"history true", "x", "recovered true", "size number", "echo m1"} {
				a.expect(t, m)
			}
		})
	}
}

const publishScript = `
local M = {}
function M.on_open(conn)
  if conn:query("sub") then
    local ok = conn:recover("h2", 0, "")
    conn:send("recovered " .. tostring(ok))
  end
end
function M.on_message(conn, data)
  local n, offset, epoch = ws.broadcast("h2", '{"p":"' .. conn:query("p") .. '","n":' .. data .. '}', { stamp = true })
  conn:send("sent " .. data .. " " .. tostring(offset))
end
return M
`

// TestBrokerWaitPublisherOrder: stamped broadcasts suspend their
// callbacks, and two publishers on one lane sending as fast as they can
// still see their messages delivered in their own order, with
// consecutive offsets, and get back increasing offsets.
func TestBrokerWaitPublisherOrder(t *testing.T) {
	const perPub = 60
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) {
			p := startBrokerProc(t, kind)
			url := brokerServed(t, newNetBroker(t, p), publishScript, 10*time.Second)
			sub := dialWS(t, url+"?sub=1")
			sub.expect(t, "recovered true")

			pubs := []*wsClient{dialWS(t, url+"?p=a"), dialWS(t, url+"?p=b")}
			for i := 1; i <= perPub; i++ {
				for _, pub := range pubs {
					pub.send(t, strconv.Itoa(i))
				}
			}
			for pi, pub := range pubs {
				var last uint64
				for i := 1; i <= perPub; i++ {
					f := strings.Fields(pub.next(t, fmt.Sprintf("publisher %d's answer %d", pi, i)))
					if len(f) != 3 || f[0] != "sent" || f[1] != strconv.Itoa(i) {
						t.Fatalf("publisher %d: answer %d is %q", pi, i, strings.Join(f, " "))
					}
					off, err := strconv.ParseUint(f[2], 10, 64)
					if err != nil || off <= last {
						t.Fatalf("publisher %d: answer %d has offset %q after %d", pi, i, f[2], last)
					}
					last = off
				}
			}
			next := map[string]int{"a": 1, "b": 1}
			for i := 1; i <= 2*perPub; i++ {
				var m struct {
					Offset uint64 `json:"offset"`
					P      string `json:"p"`
					N      int    `json:"n"`
				}
				raw := sub.next(t, fmt.Sprintf("broadcast %d", i))
				if err := json.Unmarshal([]byte(raw), &m); err != nil {
					t.Fatalf("broadcast %d: %q: %v", i, raw, err)
				}
				if m.Offset != uint64(i) {
					t.Fatalf("broadcast %d has offset %d: %s", i, m.Offset, raw)
				}
				if m.N != next[m.P] {
					t.Fatalf("publisher %q: got message %d, want %d (%s)", m.P, m.N, next[m.P], raw)
				}
				next[m.P]++
			}
		})
	}
}

// TestBrokerWaitDroppedByReload: a reload that replaces the script while
// a connection's on_open waits on a frozen broker drops the callback at
// once; the connection's held message runs on the new version, and the
// dropped callback never resumes once the broker answers.
func TestBrokerWaitDroppedByReload(t *testing.T) {
	p := startBrokerProc(t, "redis")
	s := brokerServe(t, newNetBroker(t, p), suspendScript, 30*time.Second)
	w := dialWS(t, s.url+"?slow=1")
	for _, m := range []string{"waiting", "history true", "recovered true", "size number"} {
		w.expect(t, m)
	}

	p.stop(t)
	a := dialWS(t, s.url+"?slow=1")
	a.expect(t, "waiting")
	a.send(t, "m1") // held behind the waiting on_open

	r2, err := s.eng.NewRoute(RouteConfig{Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte(`
return { on_message = function(conn, data) conn:send("v2 " .. data) end }
`)}}, Script: "t.lua", VMs: 1, HandlerTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Routes = []router.RouteSpec{{Pattern: "/t", Handler: r2}}
	if err := s.srv.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "v2 m1") // while the broker is still frozen

	p.cont()
	a.send(t, "m2")
	a.expect(t, "v2 m2") // nothing of the dropped on_open in between
}
