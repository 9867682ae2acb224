package nats

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/moonwire/moonwire/router/broker"
)

const sharedURL = "nats://127.0.0.1:4222"

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

func prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// shared skips the test when the machine's NATS server is not running.
func shared(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", 2*time.Second)
	if err != nil {
		t.Skipf("no NATS server at 127.0.0.1:4222 (%v): start one (nats-server -js) to run the NATS broker tests", err)
	}
	_ = c.Close()
	return sharedURL
}

// logBuf collects a broker's log lines; it outlives the test, which a
// t.Log-backed handler would not (nats.go calls back after Close).
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// node is one broker with what it received.
type node struct {
	b    *Broker
	log  *logBuf
	mu   sync.Mutex
	msgs []broker.Message
}

func (n *node) fn(m broker.Message) {
	m.Data = append([]byte(nil), m.Data...) // fn must not keep m.Data
	n.mu.Lock()
	n.msgs = append(n.msgs, m)
	n.mu.Unlock()
}

func (n *node) got() []broker.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]broker.Message(nil), n.msgs...)
}

func (n *node) find(data string) (broker.Message, bool) {
	for _, m := range n.got() {
		if string(m.Data) == data {
			return m, true
		}
	}
	return broker.Message{}, false
}

func (n *node) has(data string) bool { _, ok := n.find(data); return ok }

func newNode(t *testing.T, opts broker.Options, id string) *node {
	t.Helper()
	if opts.Outbox == 0 {
		opts.Outbox = 10000
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	n := &node{log: &logBuf{}}
	opts.Logger = n.log.logger()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	n.b = b
	if _, err := b.Subscribe(id, n.fn); err != nil {
		t.Fatal(err)
	}
	return n
}

func bcast(n *node, origin, room, data string) {
	_ = n.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: origin, Room: room, Data: []byte(data)})
}

// watch makes n watch room and waits until the subscription is in place,
// proven by a probe broadcast from another node arriving.
func watch(t *testing.T, n, from *node, room string) {
	t.Helper()
	n.b.WatchRoom(room)
	probe := "probe-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	deadline := time.Now().Add(20 * time.Second)
	for !n.has(probe) {
		if time.Now().After(deadline) {
			t.Fatalf("room %.40q: subscription never took effect", room)
		}
		bcast(from, "probe", room, probe)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRoomsReachOnlyWatchers: a broadcast reaches exactly the nodes that
// watch its room, whatever the room's name, and stops after UnwatchRoom.
func TestRoomsReachOnlyWatchers(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix()}
	a, b, c := newNode(t, opts, "a"), newNode(t, opts, "b"), newNode(t, opts, "c")
	rooms := []string{"lobby", "", "a.b", "x y", "*", ">", "a.*.>", strings.Repeat("long", 2000)}
	for _, r := range rooms {
		watch(t, b, a, r)
	}
	if got := b.b.Stats().Rooms; got != len(rooms) {
		t.Fatalf("b holds %d room subscriptions, want %d", got, len(rooms))
	}
	for i, r := range rooms {
		bcast(a, "a", r, "hi "+strconv.Itoa(i))
	}
	wait(t, "every room's broadcast on b", func() bool {
		for i := range rooms {
			if !b.has("hi " + strconv.Itoa(i)) {
				return false
			}
		}
		return true
	})
	for i, r := range rooms {
		if m, _ := b.find("hi " + strconv.Itoa(i)); m.Room != r || m.Origin != "a" || m.Op != broker.OpBroadcast {
			t.Fatalf("room %.40q arrived as %+v", r, m)
		}
	}
	// c watches nothing. A send to c published after the broadcasts by
	// the same node arrives after anything the server would have routed to
	// c for them, so its arrival proves c was not sent them.
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", Target: "c-1", To: "c", Data: []byte("marker")})
	wait(t, "the marker on c", func() bool { return c.has("marker") })
	for _, m := range c.got() {
		if m.Op == broker.OpBroadcast {
			t.Fatalf("c got a broadcast for a room it does not watch: %.80q", m.Data)
		}
	}
	if b.has("marker") {
		t.Fatal("a send to c reached b")
	}

	// After UnwatchRoom, b no longer hears lobby; a broadcast to a room it
	// still watches, published after, is the marker.
	b.b.UnwatchRoom("lobby")
	wait(t, "b unsubscribed", func() bool { return b.b.Stats().Rooms == len(rooms)-1 })
	bcast(a, "a", "lobby", "late")
	bcast(a, "a", "x y", "marker2")
	wait(t, "marker2 on b", func() bool { return b.has("marker2") })
	if b.has("late") {
		t.Fatal("b got a broadcast after unwatching the room")
	}
	st := a.b.Stats()
	if !st.Connected || st.Publishes == 0 || st.Dropped != 0 || st.Errors != 0 || st.LastError != "" {
		t.Fatalf("stats of a: %+v", st)
	}
	if st := b.b.Stats(); st.Receives == 0 || st.Errors != 0 {
		t.Fatalf("stats of b: %+v", st)
	}
}

// TestSendAndCloseReachOnlyTo: OpSend and OpClose go to the node To only,
// with every field intact.
func TestSendAndCloseReachOnlyTo(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix()}
	a, b, c := newNode(t, opts, "a"), newNode(t, opts, "node.b *"), newNode(t, opts, "c")
	send := broker.Message{Op: broker.OpSend, Origin: "a", Target: "b-7", To: "node.b *", Binary: true, Data: []byte{0, 1, 2, 'S'}}
	closeMsg := broker.Message{Op: broker.OpClose, Origin: "a", Target: "b-8", To: "node.b *", Code: 4001, Reason: "bye", Data: []byte("C")}
	_ = a.b.Publish(context.Background(), send)
	_ = a.b.Publish(context.Background(), closeMsg)
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", Target: "c-1", To: "c", Data: []byte("marker")})
	wait(t, "send and close on b", func() bool { return len(b.got()) == 2 })
	got := b.got()
	if g := got[0]; g.Op != send.Op || g.Target != send.Target || g.To != send.To || !g.Binary || !bytes.Equal(g.Data, send.Data) {
		t.Fatalf("send arrived as %+v", g)
	}
	if g := got[1]; g.Op != broker.OpClose || g.Target != "b-8" || g.Code != 4001 || g.Reason != "bye" || g.Binary {
		t.Fatalf("close arrived as %+v", g)
	}
	wait(t, "the marker on c", func() bool { return c.has("marker") })
	if n := len(c.got()); n != 1 {
		t.Fatalf("c got %d messages, want only its marker", n)
	}
	if n := len(a.got()); n != 0 {
		t.Fatalf("a got %d messages", n)
	}
}

// TestOrderPerPublisher: 1,000 broadcasts from one node to one room
// arrive complete and in order.
func TestOrderPerPublisher(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix()}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watch(t, b, a, "r")
	before := len(b.got())
	const n = 1000
	for i := range n {
		bcast(a, "a", "r", strconv.Itoa(i))
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
	if next != n {
		t.Fatalf("got %d messages, want %d", next, n)
	}
}

// TestOwnMessagesAreNotEchoed: a node that watches a room does not hear
// its own broadcasts to it, neither through the server (no echo) nor
// from another client using its node id as the origin.
func TestOwnMessagesAreNotEchoed(t *testing.T) {
	t.Parallel()
	url := shared(t)
	opts := broker.Options{URL: url, Prefix: prefix()}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watch(t, b, a, "r")
	watch(t, a, b, "r")
	bcast(a, "a", "r", "mine")
	// b having "mine" means the server has routed it; "theirs", published
	// after, reaches a behind anything the server routed to a for it.
	wait(t, "mine on b", func() bool { return b.has("mine") })
	bcast(b, "b", "r", "theirs")
	wait(t, "theirs on a", func() bool { return a.has("theirs") })
	if a.has("mine") {
		t.Fatal("a received its own broadcast")
	}

	raw, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	subj := a.b.roomSubject("r")
	_ = raw.Publish(subj, broker.AppendWire(nil, &broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r", Data: []byte("forged")}))
	_ = raw.Publish(subj, broker.AppendWire(nil, &broker.Message{Op: broker.OpBroadcast, Origin: "z", Room: "r", Data: []byte("marker")}))
	wait(t, "the marker on a", func() bool { return a.has("marker") })
	if a.has("forged") {
		t.Fatal("a delivered a message with its own origin")
	}
}

// TestBadPayloadAndSlowConsumer: an undecodable message is counted,
// logged and skipped; a node whose fn stalls loses messages past the
// receive buffer and counts that, instead of growing without bound.
func TestBadPayloadAndSlowConsumer(t *testing.T) {
	t.Parallel()
	url := shared(t)
	opts := broker.Options{URL: url, Prefix: prefix()}
	b := newNode(t, opts, "b")
	raw, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	subj := b.b.nodeSubject("b")
	good := broker.AppendWire(nil, &broker.Message{Op: broker.OpSend, Origin: "x", To: "b", Data: []byte("good")})
	_ = raw.Publish(subj, []byte("garbage"))
	_ = raw.Publish(subj, good)
	wait(t, "the good message", func() bool { return b.has("good") })
	if st := b.b.Stats(); st.Errors != 1 || st.Receives != 1 {
		t.Fatalf("after one bad, one good message: %+v", st)
	}
	if !strings.Contains(b.log.String(), "undecodable") {
		t.Fatalf("the bad message was not logged: %s", b.log.String())
	}

	// Stall a second node's fn on its first message and flood it.
	stalled := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s, err := New(broker.Options{URL: url, Prefix: opts.Prefix, Timeout: 5 * time.Second, Outbox: 10, Logger: b.log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer once.Do(func() { close(release) })
	if _, err := s.Subscribe("s", func(broker.Message) {
		select {
		case <-release:
		default:
			stalled <- struct{}{}
			<-release
		}
	}); err != nil {
		t.Fatal(err)
	}
	ssubj := s.nodeSubject("s")
	_ = raw.Publish(ssubj, good)
	<-stalled
	for range receiveBuffer + 1000 {
		_ = raw.Publish(ssubj, good)
	}
	_ = raw.Flush()
	wait(t, "the slow consumer to be counted", func() bool { return s.Stats().Errors >= 1 })
	once.Do(func() { close(release) })
	// Counted first, logged just after.
	wait(t, "the drop to be logged", func() bool { return strings.Contains(b.log.String(), "does not keep up") })
}

// TestUnreachableAtStart: no server within the timeout is an error that
// names the URL but not its password.
func TestUnreachableAtStart(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	url := "nats://u:hunter2@127.0.0.1:" + port
	_, err := New(broker.Options{URL: url, Prefix: "p", Timeout: time.Second, Outbox: 10})
	if err == nil || !strings.HasPrefix(err.Error(), "nats: connect nats://u:xxxxx@127.0.0.1:"+port+": ") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v, want a connect error naming the URL without its password", err)
	}
	_, err = New(broker.Options{URL: "127.0.0.1:" + port + ", nats://tok3n@127.0.0.1:" + port, Prefix: "p", Timeout: time.Second})
	if err == nil || !strings.HasPrefix(err.Error(), "nats: connect nats://127.0.0.1:"+port+",nats://xxxxx@127.0.0.1:"+port+": ") {
		t.Fatalf("got %v, want both URLs named, the token hidden", err)
	}
	if _, err := New(broker.Options{URL: sharedURL, Prefix: "a..b"}); err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Fatalf("got %v, want the prefix refused", err)
	}
}

// TestWrongPassword: bad credentials are refused at start with the cause
// named; with StartDegraded they show in LastError instead.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t, "--user", "u", "--pass", "p")
	_, err := New(broker.Options{URL: "nats://u:wrong@" + srv.addr, Prefix: "p", Timeout: 5 * time.Second, Outbox: 10})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("got %v, want an authorization violation without the password", err)
	}
	n := newNode(t, broker.Options{URL: "nats://u:wrong@" + srv.addr, Prefix: "p", Timeout: 5 * time.Second, Outbox: 10, StartDegraded: true}, "a")
	wait(t, "the cause in LastError", func() bool {
		return strings.Contains(strings.ToLower(n.b.Stats().LastError), "authorization violation")
	})
	if n.b.Stats().Connected {
		t.Fatal("connected with a wrong password")
	}
	ok := newNode(t, broker.Options{URL: "nats://u:p@" + srv.addr, Prefix: "p", Timeout: 5 * time.Second, Outbox: 10}, "b")
	if !ok.b.Stats().Connected {
		t.Fatal("not connected with the right password")
	}
}

// TestServerRestart: the broker notices the loss, reports it, reconnects
// by itself and its room subscription works again afterwards.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t)
	opts := broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second, Outbox: 100}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watch(t, b, a, "r")

	srv.stop()
	// LastError comes from the disconnect callback, which runs shortly
	// after the connection state changes.
	wait(t, "the loss to be seen", func() bool {
		sa, sb := a.b.Stats(), b.b.Stats()
		return !sa.Connected && !sb.Connected && strings.Contains(sa.LastError, "connection lost")
	})
	// While the server is away, publishing neither blocks nor fails: NATS
	// keeps the messages in its reconnect buffer.
	before := a.b.Stats()
	for i := range 50 {
		bcast(a, "a", "r", "during"+strconv.Itoa(i))
	}
	wait(t, "the outbox to empty into the reconnect buffer", func() bool {
		st := a.b.Stats()
		return st.Queued == 0 && st.Publishes >= before.Publishes+50
	})
	if st := a.b.Stats(); st.Errors != before.Errors || st.Dropped != 0 {
		t.Fatalf("publishing during the outage: %+v", st)
	}

	srv.start(t)
	wait(t, "reconnection", func() bool {
		sa, sb := a.b.Stats(), b.b.Stats()
		return sa.Connected && sb.Connected && sa.Reconnects >= 1 && sb.Reconnects >= 1
	})
	// b's room subscription came back by itself.
	wait(t, "a broadcast after the restart", func() bool {
		bcast(a, "a", "r", "back")
		time.Sleep(20 * time.Millisecond)
		return b.has("back")
	})
	if st := a.b.Stats(); st.LastError != "" || st.Rooms != 0 {
		t.Fatalf("a after reconnecting: %+v", st)
	}
	if st := b.b.Stats(); st.LastError != "" || st.Rooms != 1 {
		t.Fatalf("b after reconnecting: %+v", st)
	}
	if !strings.Contains(a.log.String(), "connection lost") || !strings.Contains(a.log.String(), "reconnected") {
		t.Fatalf("log of a: %s", a.log.String())
	}
}

// TestStartDegraded: with StartDegraded the broker starts without a
// server and works once one appears, rooms watched meanwhile included.
func TestStartDegraded(t *testing.T) {
	t.Parallel()
	srv := &natsProc{port: freePort(t)}
	srv.addr = "127.0.0.1:" + srv.port
	t.Cleanup(srv.stop)
	opts := broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: time.Second, Outbox: 100, StartDegraded: true}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	if st := a.b.Stats(); st.Connected || st.LastError == "" {
		t.Fatalf("degraded start: %+v", st)
	}
	b.b.WatchRoom("r")
	wait(t, "the room recorded", func() bool { return b.b.Stats().Rooms == 1 })
	srv.start(t)
	wait(t, "connection", func() bool {
		sa, sb := a.b.Stats(), b.b.Stats()
		return sa.Connected && sb.Connected && sa.LastError == "" && sb.LastError == ""
	})
	wait(t, "a send to b", func() bool {
		_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", To: "b", Target: "b-1", Data: []byte("hello")})
		time.Sleep(20 * time.Millisecond)
		return b.has("hello")
	})
	// The room watched before the server existed is subscribed.
	wait(t, "a broadcast to the early room", func() bool {
		bcast(a, "a", "r", "early")
		time.Sleep(20 * time.Millisecond)
		return b.has("early")
	})
	if st := a.b.Stats(); st.Reconnects != 0 {
		t.Fatalf("the first connection counted as a reconnect: %+v", st)
	}
}

// TestOutboxOverflow: with no server, Publish keeps returning at once and
// a full outbox drops, counts and logs (once, not per message).
func TestOutboxOverflow(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: "nats://127.0.0.1:" + freePort(t), Prefix: "p", Timeout: time.Second, Outbox: 10, StartDegraded: true}
	a := newNode(t, opts, "a")
	deadline := time.Now().Add(20 * time.Second)
	for a.b.Stats().Dropped == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing dropped: %+v", a.b.Stats())
		}
		for i := range 1000 {
			bcast(a, "a", "r", strconv.Itoa(i))
		}
	}
	if st := a.b.Stats(); st.Queued > 10 || st.Connected {
		t.Fatalf("stats: %+v", st)
	}
	if n := strings.Count(a.log.String(), "outbox full"); n != 1 {
		t.Fatalf("%d overflow lines, want 1: %s", n, a.log.String())
	}
}

// TestSubscribeOnceCancelAndClose: one node per broker, cancel stops
// delivery, Close is idempotent and Publish after it is refused.
func TestSubscribeOnceCancelAndClose(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix()}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	if _, err := b.b.Subscribe("b2", func(broker.Message) {}); err == nil {
		t.Fatal("a second Subscribe succeeded")
	}

	c, err := New(broker.Options{URL: opts.URL, Prefix: opts.Prefix, Timeout: 5 * time.Second, Outbox: 10, Logger: (&logBuf{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var got []string
	cancel, err := c.Subscribe("c", func(m broker.Message) {
		mu.Lock()
		got = append(got, string(m.Data))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	received := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == s
	}
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", To: "c", Data: []byte("before")})
	wait(t, "a send to c", func() bool { return received("before") })
	cancel()
	cancel()
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", To: "c", Data: []byte("after")})
	_ = a.b.Publish(context.Background(), broker.Message{Op: broker.OpSend, Origin: "a", To: "b", Data: []byte("marker")})
	wait(t, "the marker on b", func() bool { return b.has("marker") })
	if received("after") {
		t.Fatal("delivery after cancel")
	}

	_ = b.b.Close()
	_ = b.b.Close()
	if err := b.b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Room: "r"}); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	if _, err := b.b.Subscribe("x", func(broker.Message) {}); err == nil {
		t.Fatal("Subscribe after Close succeeded")
	}
}

// TestCloseLeavesNoGoroutines: not parallel, so that the count is ours.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	url := shared(t)
	base := runtime.NumGoroutine()
	for _, degraded := range []bool{false, true} {
		u := url
		if degraded {
			u = "nats://127.0.0.1:" + freePort(t)
		}
		b, err := New(broker.Options{URL: u, Prefix: prefix(), Timeout: 5 * time.Second, Outbox: 10, StartDegraded: degraded, Logger: (&logBuf{}).logger()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Subscribe("a", func(broker.Message) {}); err != nil {
			t.Fatal(err)
		}
		b.WatchRoom("r")
		_ = b.Publish(context.Background(), broker.Message{Op: broker.OpBroadcast, Origin: "a", Room: "r"})
		_ = b.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", base, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestToken(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"", "a", "a.b", "x y", "*", ">", "é", strings.Repeat("x", 191), strings.Repeat("x", 193), strings.Repeat("y", 100000)} {
		tok := token(name)
		if len(tok) < 1 || len(tok) > maxPlainToken+1 || strings.ContainsAny(tok, ". \t\r\n*>") {
			t.Fatalf("token(%.20q) = %q: not one short subject token", name, tok)
		}
		if other, ok := seen[tok]; ok {
			t.Fatalf("%.20q and %.20q share token %q", name, other, tok)
		}
		seen[tok] = name
	}
}

// --- a private nats-server, for the tests that stop or restart it ---

type natsProc struct {
	port, addr string
	args       []string
	mu         sync.Mutex
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

func newNatsProc(t *testing.T, args ...string) *natsProc {
	t.Helper()
	p := &natsProc{port: freePort(t), args: args}
	p.addr = "127.0.0.1:" + p.port
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *natsProc) start(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nats-server"); err != nil {
			t.Skip("nats-server is not installed: this test starts and restarts its own NATS server")
		}
	}
	cmd := exec.Command(bin, append([]string{"-a", "127.0.0.1", "-p", p.port}, p.args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	wait(t, "nats-server on "+p.addr, func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

func (p *natsProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}
