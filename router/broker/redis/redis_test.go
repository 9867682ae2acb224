package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/router/broker"
)

const sharedURL = "redis://127.0.0.1:6379/0"

// wait polls cond until it holds or the deadline passes.
func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func prefix(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// shared skips the test when the machine's Redis is not running.
func shared(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second)
	if err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379 (%v): start one to run the Redis broker tests", err)
	}
	_ = c.Close()
	return sharedURL
}

// node is one broker with what it received.
type node struct {
	b    *Broker
	mu   sync.Mutex
	msgs []broker.Message
}

func (n *node) fn(m broker.Message) {
	m.Data = append([]byte(nil), m.Data...)
	n.mu.Lock()
	n.msgs = append(n.msgs, m)
	n.mu.Unlock()
}

func (n *node) got() []broker.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]broker.Message(nil), n.msgs...)
}

func (n *node) has(data string) bool {
	for _, m := range n.got() {
		if string(m.Data) == data {
			return true
		}
	}
	return false
}

func newNode(t *testing.T, opts broker.Options, id string) *node {
	t.Helper()
	if opts.Outbox == 0 {
		opts.Outbox = 10000
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	n := &node{b: b}
	if _, err := b.Subscribe(id, n.fn); err != nil {
		t.Fatal(err)
	}
	return n
}

// watch makes n watch room and waits until the subscription is in place,
// proven by a probe broadcast from probe arriving.
func watch(t *testing.T, n, from *node, room string) {
	t.Helper()
	n.b.WatchRoom(room)
	probe := "probe-" + room + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	deadline := time.Now().Add(20 * time.Second)
	for !n.has(probe) {
		if time.Now().After(deadline) {
			t.Fatalf("room %q: subscription never took effect", room)
		}
		_ = from.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "probe", Room: room, Data: []byte(probe)})
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRoomsReachOnlyWatchers(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a, b, c := newNode(t, opts, "a"), newNode(t, opts, "b"), newNode(t, opts, "c")
	rooms := []string{"lobby", "", "a.b", "x y", "*", "room:with:colons"}
	for _, r := range rooms {
		watch(t, b, a, r)
	}
	for _, r := range rooms {
		if err := a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: r, Data: []byte("hi " + r)}); err != nil {
			t.Fatal(err)
		}
	}
	wait(t, "every room's broadcast on b", func() bool {
		for _, r := range rooms {
			if !b.has("hi " + r) {
				return false
			}
		}
		return true
	})
	// c watches nothing; a direct send to c, published after the
	// broadcasts on the same outbox, arriving proves they were not
	// delivered to c.
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", Target: "c-1", To: "c", Data: []byte("marker")})
	wait(t, "the marker on c", func() bool { return c.has("marker") })
	for _, m := range c.got() {
		if m.Op == broker.OpBroadcast {
			t.Fatalf("c got a broadcast for a room it does not watch: %+v", m)
		}
	}
	if b.has("marker") {
		t.Fatal("a send to c reached b")
	}
	// After UnwatchRoom, b no longer hears lobby.
	b.b.UnwatchRoom("lobby")
	wait(t, "b unsubscribed", func() bool { return b.b.Stats().Rooms == len(rooms)-1 })
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "lobby", Data: []byte("late")})
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "x y", Data: []byte("marker2")})
	wait(t, "marker2 on b", func() bool { return b.has("marker2") })
	if b.has("late") {
		t.Fatal("b got a broadcast after unwatching the room")
	}
	st := a.b.Stats()
	if !st.Connected || st.Publishes == 0 || st.Dropped != 0 {
		t.Fatalf("stats of a: %+v", st)
	}
}

func TestOrderPerPublisher(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watch(t, b, a, "r")
	before := len(b.got())
	const n = 2000
	for i := range n {
		_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r", Data: []byte(strconv.Itoa(i))})
	}
	wait(t, "every message", func() bool { return len(b.got())-before >= n })
	next := 0
	for _, m := range b.got()[before:] {
		if strings.HasPrefix(string(m.Data), "probe") {
			continue
		}
		if string(m.Data) != strconv.Itoa(next) {
			t.Fatalf("message %d is %q: out of order", next, m.Data)
		}
		next++
	}
}

func TestOwnMessagesAreNotEchoed(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	a.b.WatchRoom("r")
	watch(t, b, a, "r")
	watch(t, a, b, "r")
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r", Data: []byte("mine")})
	_ = b.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "b", Room: "r", Data: []byte("theirs")})
	wait(t, "theirs on a", func() bool { return a.has("theirs") })
	wait(t, "mine on b", func() bool { return b.has("mine") })
	if a.has("mine") {
		t.Fatal("a received its own broadcast")
	}
}

func TestUnreachableAtStart(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	url := "redis://:hunter2@127.0.0.1:" + port
	_, err := New(broker.Options{URL: url, Prefix: "p", Timeout: time.Second, Outbox: 10})
	if err == nil || !strings.Contains(err.Error(), "redis: connect redis://:xxxxx@127.0.0.1:"+port) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v, want a connect error naming the URL without its password", err)
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	addr := startRedis(t, "--requirepass", "right")
	_, err := New(broker.Options{URL: "redis://:wrong@" + addr, Prefix: "p", Timeout: 5 * time.Second, Outbox: 10})
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("got %v, want WRONGPASS", err)
	}
	b, err := New(broker.Options{URL: "redis://:right@" + addr, Prefix: "p", Timeout: 5 * time.Second, Outbox: 10})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
}

// TestMissingPermission: a Redis user that may not publish on the
// prefix's channels is refused at start with the channel named.
func TestMissingPermission(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	defer admin.Close()
	if err := admin.Do(context.Background(), "ACL", "SETUSER", "app", "on", ">pw", "+@all", "&other:*").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := New(broker.Options{URL: "redis://app:pw@" + addr, Prefix: "mw", Timeout: 5 * time.Second, Outbox: 10})
	if err == nil || !strings.Contains(err.Error(), "PUBLISH mw:probe") || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("got %v, want NOPERM naming the channel", err)
	}
}

// TestRedisRestart: the broker notices the loss, reports it, reconnects
// by itself and subscribes its rooms again; traffic flows afterwards.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv := newRedisProc(t)
	opts := broker.Options{URL: "redis://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second, Outbox: 100}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watch(t, b, a, "r")

	srv.stop(t)
	wait(t, "the loss to be seen", func() bool { return !a.b.Stats().Connected && !b.b.Stats().Connected })
	if a.b.Stats().LastError == "" {
		t.Fatal("no LastError while disconnected")
	}
	// While Redis is away publishing neither blocks nor grows without
	// bound: past the outbox, messages are dropped and counted.
	for i := range 1000 {
		_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r", Data: []byte("lost" + strconv.Itoa(i))})
	}
	st := a.b.Stats()
	if st.Dropped == 0 || st.Queued > 100 {
		t.Fatalf("outbox during the outage: %+v", st)
	}

	srv.start(t)
	wait(t, "reconnection", func() bool {
		sa, sb := a.b.Stats(), b.b.Stats()
		return sa.Connected && sb.Connected && sa.Reconnects >= 1 && sb.Reconnects >= 1
	})
	// b's room subscription came back by itself.
	wait(t, "a broadcast after the restart", func() bool {
		_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r", Data: []byte("back")})
		time.Sleep(20 * time.Millisecond)
		return b.has("back")
	})
	if st := a.b.Stats(); st.LastError != "" {
		t.Fatalf("LastError %q after reconnecting", st.LastError)
	}
}

// TestStartDegraded: with StartDegraded the broker starts without Redis
// and works once Redis appears, rooms watched meanwhile included.
func TestStartDegraded(t *testing.T) {
	t.Parallel()
	srv := &redisProc{port: freePort(t)}
	srv.addr = "127.0.0.1:" + srv.port
	opts := broker.Options{URL: "redis://" + srv.addr, Prefix: "p", Timeout: time.Second, Outbox: 100, StartDegraded: true}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	if a.b.Stats().Connected {
		t.Fatal("connected to nothing")
	}
	b.b.WatchRoom("r")
	t.Cleanup(func() { srv.stop(t) })
	srv.start(t)
	wait(t, "connection", func() bool { return a.b.Stats().Connected && b.b.Stats().Connected })
	wait(t, "a send to b", func() bool {
		_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", To: "b", Target: "b-1", Data: []byte("hello")})
		time.Sleep(20 * time.Millisecond)
		return b.has("hello")
	})
	watch(t, b, a, "r")
}

func TestSecondSubscribeAndCloseTwice(t *testing.T) {
	t.Parallel()
	n := newNode(t, broker.Options{URL: shared(t), Prefix: prefix(t)}, "a")
	if _, err := n.b.Subscribe("b", func(broker.Message) {}); err == nil {
		t.Fatal("a second Subscribe succeeded")
	}
	_ = n.b.Close()
	_ = n.b.Close()
}

// --- a private redis-server, for the tests that stop or restart it ---

type redisProc struct {
	port, addr string
	args       []string
	cmd        *exec.Cmd
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

func newRedisProc(t *testing.T, args ...string) *redisProc {
	t.Helper()
	p := &redisProc{port: freePort(t), args: args}
	p.addr = "127.0.0.1:" + p.port
	p.start(t)
	t.Cleanup(func() { p.stop(t) })
	return p
}

func startRedis(t *testing.T, args ...string) string { return newRedisProc(t, args...).addr }

func (p *redisProc) start(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt install redis-server): this test restarts its own Redis")
	}
	args := append([]string{"--bind", "127.0.0.1", "--port", p.port, "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, p.args...)
	p.cmd = exec.Command(bin, args...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "redis-server on "+p.addr, func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

func (p *redisProc) stop(t *testing.T) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}
