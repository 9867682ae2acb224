// Package cluster_test runs the cluster example as a user would: three
// moonwire processes over a Redis of the test's own, clients that follow
// the chat through a node SIGKILL and a Redis restart, and checks that no
// client lost or got twice a single message.
package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// node is one moonwire process.
type node struct {
	cmd  *exec.Cmd
	addr string // host:port of its WebSocket listener
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// brokerProc is a broker server of the test's own, which keeps its data
// on disk so that a restart keeps the history: redis-server with an
// append-only file, or nats-server with a JetStream store.
type brokerProc struct {
	kind, port, dir string
	cmd             *exec.Cmd
}

func (r *brokerProc) start(t *testing.T) {
	t.Helper()
	name := map[string]string{"redis": "redis-server", "nats": "nats-server"}[r.kind]
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (apt install %s): this test restarts its own", name, name)
	}
	if r.kind == "redis" {
		r.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", r.port, "--dir", r.dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "")
	} else {
		r.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", r.port, "-js", "-sd", r.dir)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, name, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+r.port, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (r *brokerProc) stop() {
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGTERM) // writes the AOF / the store
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

func startNode(t *testing.T, bin, cfg string) *node {
	t.Helper()
	cmd := exec.Command(bin, "-config", cfg, "-listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("node log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && strings.HasPrefix(f[0], "ws://") {
				select {
				case addr <- strings.SplitN(strings.TrimPrefix(f[0], "ws://"), "/", 2)[0]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return &node{cmd: cmd, addr: a}
	case <-time.After(60 * time.Second):
		t.Fatal("the node did not start")
		return nil
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// chatMsg is what chat.lua sends, stamped.
type chatMsg struct {
	Type    string
	Text    string
	Offset  uint64
	Epoch   string
	Members int
	Reason  string
}

// follower is a client that keeps a contiguous run of offsets: on a
// dropped connection, or a gap, it reconnects (to the next node) with
// ?since= and &epoch=, as moonwire.js does.
type follower struct {
	addrs    []string
	next     int
	last     uint64
	epoch    string
	count    int
	recovers int
	joined   atomic.Bool // it heard a first message: it is in the room
}

func (f *follower) run(ctx context.Context, t *testing.T, final *atomic.Uint64) {
	for ctx.Err() == nil {
		addr := f.addrs[f.next%len(f.addrs)]
		f.next++
		url := "ws://" + addr + "/chat/room"
		if f.last > 0 {
			url += fmt.Sprintf("?since=%d&epoch=%s", f.last, f.epoch)
			f.recovers++
		}
		c, err := moontest.TryDial(t, url)
		if err != nil {
			continue // a dead node: the next one
		}
		done := f.follow(ctx, t, c, final)
		_ = c.Conn.Close() // no closing handshake: the node may be gone
		if done {
			return
		}
	}
}

// follow reads c until the follower has everything up to final (true),
// or must reconnect (false).
func (f *follower) follow(ctx context.Context, t *testing.T, c *moontest.Client, final *atomic.Uint64) bool {
	for ctx.Err() == nil {
		fr, err := c.ReadFrame(time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if fin := final.Load(); fin != 0 && f.last >= fin {
					return true
				}
				if final.Load() != 0 {
					return false // a tail lost live: recover it
				}
				continue
			}
			return false
		}
		switch fr.Op {
		case ws.OpClose:
			return false // e.g. 1013, history unavailable: come back
		case ws.OpText:
		default:
			continue
		}
		var m chatMsg
		if err := json.Unmarshal(fr.Payload, &m); err != nil {
			t.Errorf("not JSON: %q", fr.Payload)
			return true
		}
		switch {
		case m.Type == "reload":
			t.Errorf("told to reload (%s) at offset %d: history should have covered it", m.Reason, f.last)
			return true
		case f.epoch != "" && m.Epoch != f.epoch:
			t.Errorf("epoch changed from %s to %s", f.epoch, m.Epoch)
			return true
		case f.last == 0 || m.Offset == f.last+1:
			f.last, f.epoch = m.Offset, m.Epoch
			f.count++
			f.joined.Store(true)
		case m.Offset <= f.last:
			t.Errorf("offset %d again (after %d): a duplicate", m.Offset, f.last)
			return true
		default:
			return false // a gap: live delivery missed some; recover them
		}
		if fin := final.Load(); fin != 0 && f.last >= fin {
			return true
		}
	}
	return true
}

// TestClusterSurvivesNodeKillAndBrokerRestart: three processes, followers
// on every node, one publisher. Mid-traffic one node is killed with
// SIGKILL and the broker (Redis, then NATS) is restarted. Every follower
// ends with every message from its first one to the last, once each; the
// killed node's members leave presence within its TTL.
func TestClusterSurvivesNodeKillAndBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	for _, kind := range []string{"redis", "nats"} {
		t.Run(kind, func(t *testing.T) { survive(t, kind) })
	}
}

func survive(t *testing.T, kind string) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "moonwire")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/moonwire").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	broker := &brokerProc{kind: kind, port: freePort(t), dir: t.TempDir()}
	broker.start(t)
	defer broker.stop()

	file := map[string]string{"redis": "moonwire.toml", "nats": "nats.toml"}[kind]
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("../../scripts")
	cfg := strings.NewReplacer(
		`url = "redis://127.0.0.1:6379/0"`, `url = "redis://127.0.0.1:`+broker.port+`/0"`,
		`url = "nats://127.0.0.1:4222"`, `url = "nats://127.0.0.1:`+broker.port+`"`,
		`dir = "../../scripts"`, `dir = "`+abs+`"`,
		`presence_ttl = "6s"`, `presence_ttl = "2s"`,
	).Replace(string(text))
	cfgFile := filepath.Join(dir, "moonwire.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	nodes := []*node{startNode(t, bin, cfgFile), startNode(t, bin, cfgFile), startNode(t, bin, cfgFile)}
	addrs := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}

	// Followers, four per node, each starting on its own node.
	var final atomic.Uint64
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer fcancel()
	const followers = 12
	fs := make([]*follower, followers)
	var wg sync.WaitGroup
	for i := range fs {
		fs[i] = &follower{addrs: addrs, next: i % 3}
		wg.Add(1)
		go func() { defer wg.Done(); fs[i].run(fctx, t, &final) }()
	}
	// Wait until each follower has heard something: it is in the room.
	waitFor(t, "the followers to join", 60*time.Second, func() bool {
		pub := joinChat(t, addrs[0], "hello", 30*time.Second)
		defer pub.Close(1000)
		time.Sleep(50 * time.Millisecond)
		return countJoined(fs) == followers
	})

	pub := joinChat(t, addrs[0], "ready", 30*time.Second)
	const total = 300
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := range total {
		<-tick.C
		pub.Send("m" + strconv.Itoa(i))
		switch i {
		case 100:
			_ = nodes[2].cmd.Process.Kill() // SIGKILL: no leave, no goodbye
		case 200:
			broker.stop()
		case 230:
			broker.start(t)
		}
	}
	// The publisher hears its own last message (chat.lua sends to the
	// sender too): its offset is the last every follower must reach.
	for {
		fr, err := pub.ReadFrame(60 * time.Second)
		if err != nil {
			t.Fatalf("the publisher never heard its last message: %v", err)
		}
		var m chatMsg
		_ = json.Unmarshal(fr.Payload, &m)
		if m.Text == "m"+strconv.Itoa(total-1) {
			final.Store(m.Offset)
			break
		}
	}
	wg.Wait()
	for i, f := range fs {
		if f.last < final.Load() {
			t.Errorf("follower %d stopped at offset %d of %d", i, f.last, final.Load())
		}
	}
	moved := 0
	for _, f := range fs {
		moved += f.recovers
	}
	t.Logf("final offset %d; %d recoveries over %d followers", final.Load(), moved, followers)
	if moved < followers/3 {
		t.Errorf("only %d recoveries: the killed node's followers did not move", moved)
	}

	// Presence: the killed node's members vanish within its TTL; the
	// room holds the publisher, and a newcomer that counts itself.
	waitFor(t, "presence without the killed node", 30*time.Second, func() bool {
		c, err := moontest.TryDial(t, "ws://"+addrs[1]+"/chat/room")
		if err != nil {
			return false
		}
		defer c.Close(1000)
		for {
			fr, err := c.ReadFrame(5 * time.Second)
			if err != nil {
				return false
			}
			var m chatMsg
			_ = json.Unmarshal(fr.Payload, &m)
			if m.Type == "join" && m.Offset > final.Load() {
				return m.Members == 2
			}
		}
	})
}

// joinChat connects to addr's room as chat.lua's clients must: a node
// closes a newcomer 1013 while it cannot read the room's history (the
// broker has just started, or answers late on a loaded machine), and
// the client comes back. It returns once the client has heard its own
// hello, so it is in the room.
func joinChat(t *testing.T, addr, hello string, within time.Duration) *moontest.Client {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := moontest.TryDial(t, "ws://"+addr+"/chat/room")
		if err == nil {
			if err = heard(c, hello, deadline); err == nil {
				return c
			}
			_ = c.Conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never let a client into the room; the last try: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heard sends hello on c and reads until it comes back (chat.lua sends a
// message to its sender too), or says why it did not.
func heard(c *moontest.Client, hello string, deadline time.Time) error {
	if err := c.WriteFrame(ws.OpText, true, []byte(hello)); err != nil {
		return err
	}
	for {
		fr, err := c.ReadFrame(max(time.Until(deadline), time.Millisecond))
		if err != nil {
			return err
		}
		if fr.Op == ws.OpClose {
			code, reason := fr.CloseCode()
			return fmt.Errorf("closed %d %q", code, reason)
		}
		var m chatMsg
		if fr.Op == ws.OpText && json.Unmarshal(fr.Payload, &m) == nil && m.Text == hello {
			return nil
		}
	}
}

func countJoined(fs []*follower) int {
	n := 0
	for _, f := range fs {
		if f.joined.Load() {
			n++
		}
	}
	return n
}
