package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/router/broker"
)

// sharedHist is the options of a test of history on the shared server,
// whose stream is deleted at the end (the server keeps it on disk).
func sharedHist(t *testing.T) broker.Options {
	t.Helper()
	opts := broker.Options{URL: shared(t), Prefix: prefix()}
	t.Cleanup(func() { deleteStream(opts) })
	return opts
}

// contiguous fails t unless the offsets handed out (offset -> data) are
// exactly 1..total, all in one epoch, which it returns.
func contiguous(t *testing.T, data map[uint64]string, epochs map[string]bool, total int) string {
	t.Helper()
	if len(data) != total || len(epochs) != 1 {
		t.Fatalf("%d offsets in %d epochs, want %d in 1", len(data), len(epochs), total)
	}
	for off := uint64(1); off <= uint64(total); off++ {
		if _, ok := data[off]; !ok {
			t.Fatalf("offset %d never handed out", off)
		}
	}
	var epoch string
	for e := range epochs {
		epoch = e
	}
	return epoch
}

// withJetStream runs f on a JetStream context of the server at url, for
// a test's clean-up; nothing happens when the server cannot be reached.
func withJetStream(url string, f func(ctx context.Context, js jetstream.JetStream)) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f(ctx, js)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hmsg(origin, room, data string) broker.Message {
	return broker.Message{Op: broker.OpBroadcast, Origin: origin, Room: room, Data: []byte(data)}
}

// pub appends one broadcast and fails the test on an error.
func pub(t *testing.T, n *node, origin, room, data string, size int, ttl time.Duration) broker.Position {
	t.Helper()
	pos, err := n.b.PublishHistory(ctxT(t), hmsg(origin, room, data), size, ttl)
	if err != nil {
		t.Fatalf("PublishHistory %q: %v", data, err)
	}
	return pos
}

// hist returns what n received with an offset, for room.
func (n *node) hist(room string) []broker.Message {
	var out []broker.Message
	for _, m := range n.got() {
		if m.Offset != 0 && m.Room == room {
			out = append(out, m)
		}
	}
	return out
}

func watchHist(t *testing.T, n *node, room string) {
	t.Helper()
	n.b.WatchRoom(room)
	if err := n.b.WaitWatched(ctxT(t), room); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, n *node, room string, since uint64, limit int) ([]broker.Entry, broker.Position, uint64) {
	t.Helper()
	es, top, oldest, err := n.b.ReadHistory(ctxT(t), room, since, limit)
	if err != nil {
		t.Fatalf("ReadHistory(%q, %d, %d): %v", room, since, limit, err)
	}
	return es, top, oldest
}

// checkEntries wants the entries first..last with data prefix+offset.
func checkEntries(t *testing.T, es []broker.Entry, first, last uint64, prefix string) {
	t.Helper()
	if uint64(len(es)) != last-first+1 || len(es) > 0 && (es[0].Offset != first || es[len(es)-1].Offset != last) {
		var offs []uint64
		for _, e := range es {
			offs = append(offs, e.Offset)
		}
		t.Fatalf("entries %v, want %d..%d", offs, first, last)
	}
	for i, e := range es {
		want := prefix + strconv.FormatUint(first+uint64(i), 10)
		if e.Offset != first+uint64(i) || string(e.Data) != want {
			t.Fatalf("entry %d: offset %d data %q, want %d %q", i, e.Offset, e.Data, first+uint64(i), want)
		}
	}
}

// TestFirstAppendsToAFreshStream: three nodes make their first append to
// a room at once, on a stream none of them has created yet, a hundred times
// over. nats-server 2.9 sometimes leaves the first direct get of a stream
// another connection has just created unanswered; the read is asked again
// (internal/jsread), so every append is acknowledged with its offset and
// none waits out its timeout to be queued for a reconnect that never
// comes.
func TestFirstAppendsToAFreshStream(t *testing.T) {
	t.Parallel()
	ids := []string{"a", "b", "c"}
	for round := range 100 {
		opts := sharedHist(t)
		opts.Timeout = 10 * time.Second // room for several of jsread's tries
		var nodes []*node
		for _, id := range ids {
			nodes = append(nodes, newNode(t, opts, id))
		}
		var wg sync.WaitGroup
		offsets := make([]uint64, len(nodes))
		for i, n := range nodes {
			wg.Go(func() {
				pos, err := n.b.PublishHistory(context.Background(), hmsg(ids[i], "room", ids[i]), 10, time.Minute)
				if err != nil {
					t.Errorf("round %d, node %s: PublishHistory: %v", round, ids[i], err)
				}
				offsets[i] = pos.Offset
			})
		}
		wg.Wait()
		for _, n := range nodes {
			_ = n.b.Close()
		}
		deleteStream(opts)
		if t.Failed() {
			return
		}
		slices.Sort(offsets)
		if !slices.Equal(offsets, []uint64{1, 2, 3}) {
			t.Fatalf("round %d: offsets %v, want 1, 2, 3", round, offsets)
		}
	}
}

// TestHistoryOrderAcrossNodes: three nodes append 300 broadcasts each to
// one room at the same time. The offsets handed out are 1..900, each
// once, in one epoch, increasing for each publisher; every node, the
// origins included, receives 1..900 exactly once and in offset order, each
// with the data that got that offset.
func TestHistoryOrderAcrossNodes(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	// 900 appends racing from three nodes: on a loaded machine one may
	// wait longer than the default timeout, which would queue it (an
	// outage's path, not this test's).
	opts.Timeout = 30 * time.Second
	ids := []string{"a", "b", "c"}
	var nodes []*node
	for _, id := range ids {
		n := newNode(t, opts, id)
		watchHist(t, n, "room")
		nodes = append(nodes, n)
	}
	const per = 300
	const total = per * 3
	var mu sync.Mutex
	dataAt := map[uint64]string{}
	epochs := map[string]bool{}
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var prev uint64
			for k := range per {
				data := fmt.Sprintf("%s-%d", ids[i], k)
				pos, err := n.b.PublishHistory(context.Background(), hmsg(ids[i], "room", data), 1000, time.Minute)
				if err != nil {
					t.Errorf("%s: PublishHistory: %v", data, err)
					return
				}
				if pos.Offset <= prev {
					t.Errorf("%s: offset %d after %d", data, pos.Offset, prev)
				}
				prev = pos.Offset
				mu.Lock()
				if old, dup := dataAt[pos.Offset]; dup {
					t.Errorf("offset %d given to %s and %s", pos.Offset, old, data)
				}
				dataAt[pos.Offset] = data
				epochs[pos.Epoch] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	contiguous(t, dataAt, epochs, total)
	for i, n := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for len(n.hist("room")) < total && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if h := n.hist("room"); len(h) < total {
			have := map[uint64]int{}
			for _, m := range h {
				have[m.Offset]++
			}
			var miss []uint64
			for o := uint64(1); o <= total; o++ {
				if have[o] == 0 {
					miss = append(miss, o)
				}
			}
			t.Fatalf("%s received %d broadcasts, missing offsets %v; stats %+v", ids[i], len(h), miss, n.b.Stats())
		}
		got := n.hist("room")
		if len(got) != total {
			t.Fatalf("%s received %d broadcasts, want %d", ids[i], len(got), total)
		}
		for k, m := range got {
			if m.Offset != uint64(k+1) || !epochs[m.Epoch] || string(m.Data) != dataAt[m.Offset] {
				t.Fatalf("%s: broadcast %d is offset %d epoch %s data %q; want offset %d data %q",
					ids[i], k, m.Offset, m.Epoch, m.Data, k+1, dataAt[uint64(k+1)])
			}
		}
	}
	_, top, oldest := read(t, nodes[0], "room", total, 10)
	if top.Offset != total || !epochs[top.Epoch] || oldest != 1 {
		t.Fatalf("after the race: top %+v oldest %d", top, oldest)
	}
}

// TestHistoryReadTrimmed: ReadHistory returns what a room keeps (its last
// size entries) after since, up to limit, oldest first (a walk back; the
// consumer's way is in TestHistoryBatch*); a room's size applies to it
// alone, while the stream's per-room limit rises to the largest one.
func TestHistoryReadTrimmed(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	n := newNode(t, opts, "a")
	if es, top, oldest := read(t, n, "r", 0, 10); es != nil || top != (broker.Position{}) || oldest != 0 {
		t.Fatalf("before any stream: %v %+v %d", es, top, oldest)
	}
	var epoch string
	for i := 1; i <= 50; i++ {
		pos := pub(t, n, "a", "r", "m"+strconv.Itoa(i), 20, time.Minute)
		if pos.Offset != uint64(i) || epoch != "" && pos.Epoch != epoch {
			t.Fatalf("append %d at %+v (epoch %s)", i, pos, epoch)
		}
		epoch = pos.Epoch
	}
	for _, c := range []struct {
		since       uint64
		limit       int
		first, last uint64 // last < first: none
	}{
		{0, 1000, 31, 50}, // walk (TestHistoryBatchTrimmed scans)
		{10, 100, 31, 50}, // walk, since trimmed
		{30, 3, 31, 33},   // walk, limited
		{40, 5, 41, 45},   // walk
		{45, 100, 46, 50}, // walk
		{49, 1, 50, 50},
		{50, 10, 1, 0},
		{70, 10, 1, 0},
		{45, 0, 1, 0},
	} {
		es, top, oldest := read(t, n, "r", c.since, c.limit)
		if top != (broker.Position{Offset: 50, Epoch: epoch}) || oldest != 31 {
			t.Fatalf("since %d: top %+v oldest %d, want 50 %s and 31", c.since, top, oldest, epoch)
		}
		if c.last < c.first {
			if len(es) != 0 {
				t.Fatalf("since %d limit %d: %d entries, want none", c.since, c.limit, len(es))
			}
			continue
		}
		checkEntries(t, es, c.first, c.last, "m")
	}
	if es, top, oldest := read(t, n, "never", 0, 10); es != nil || top != (broker.Position{}) || oldest != 0 {
		t.Fatalf("a room never written: %v %+v %d", es, top, oldest)
	}

	// A smaller room in the same stream keeps its own 5.
	for i := 1; i <= 12; i++ {
		m := hmsg("a", "small", "s"+strconv.Itoa(i))
		m.Binary = i%2 == 0
		if _, err := n.b.PublishHistory(ctxT(t), m, 5, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	es, top, oldest := read(t, n, "small", 0, 100)
	checkEntries(t, es, 8, 12, "s")
	if top.Offset != 12 || oldest != 8 || !es[0].Binary || es[1].Binary {
		t.Fatalf("small room: top %+v oldest %d entries %+v", top, oldest, es)
	}
	// Raising its size keeps what was trimmed trimmed (as Memory does) and
	// raises the stream's per-room limit.
	pub(t, n, "a", "small", "s13", 40, time.Minute)
	es, _, oldest = read(t, n, "small", 0, 100)
	checkEntries(t, es, 8, 13, "s")
	if oldest != 8 {
		t.Fatalf("oldest %d after raising the size, want 8", oldest)
	}
	st, err := n.b.h.js.Stream(ctxT(t), streamName(opts.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxMsgsPerSubject != 40 || cfg.MaxAge != time.Minute {
		t.Fatalf("stream limits: %d per subject, max age %v", cfg.MaxMsgsPerSubject, cfg.MaxAge)
	}
}

// TestHistoryStamp: with Stamp, the offset and epoch a broadcast gets are
// written into it (broker.Stamp) before it is stored, so that watchers
// and the history see the same stamped bytes; without Stamp, or for data
// that is not a JSON object, the data is left as it is.
func TestHistoryStamp(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a := newNode(t, opts, "a")
	watchHist(t, a, "r")
	var want []string
	for i, c := range []struct {
		data  string
		stamp bool
	}{{`{"text":"hi"}`, true}, {`{"text":"raw"}`, false}, {"not an object", true}} {
		m := hmsg("a", "r", c.data)
		m.Stamp = c.stamp
		pos, err := a.b.PublishHistory(ctxT(t), m, 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		w := c.data
		if c.stamp {
			w = string(broker.Stamp([]byte(c.data), pos))
		}
		if i == 0 && w != `{"offset":1,"epoch":"`+pos.Epoch+`","text":"hi"}` {
			t.Fatalf("stamped as %s", w)
		}
		want = append(want, w)
	}
	wait(t, "the broadcasts", func() bool { return len(a.hist("r")) == len(want) })
	es, _, _ := read(t, a, "r", 0, 10)
	for i, m := range a.hist("r") {
		if string(m.Data) != want[i] || string(es[i].Data) != want[i] {
			t.Fatalf("broadcast %d received as %s, read as %s, want %s", i, m.Data, es[i].Data, want[i])
		}
	}
}

// TestHistoryExpiry: a room unused for its ttl is gone (zero Position)
// even while the stream keeps messages longer for another room; the next
// append starts a new epoch at offset 1 and the old entries are not
// returned. Watchers get the new epoch's offsets too.
func TestHistoryExpiry(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watchHist(t, b, "short")
	pub(t, a, "a", "long", "keeps the stream's max age at a minute", 10, time.Minute)
	// Long enough for two appends in a row on a loaded machine.
	const ttl = time.Second
	var e1 string
	for i := 1; i <= 3; i++ {
		e1 = pub(t, a, "a", "short", "old"+strconv.Itoa(i), 10, ttl).Epoch
	}
	appended := time.Now()
	if _, top, _ := read(t, b, "short", 0, 10); top != (broker.Position{Offset: 3, Epoch: e1}) && time.Since(appended) < ttl {
		t.Fatalf("before expiry: %+v", top)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if es, top, oldest := read(t, b, "short", 0, 10); es != nil || top != (broker.Position{}) || oldest != 0 {
		t.Fatalf("expired room: %v %+v %d", es, top, oldest)
	}
	p := pub(t, b, "b", "short", "new1", 10, ttl) // b never appended: it reads the expiry
	if p.Offset != 1 || p.Epoch == e1 || p.Epoch == "" {
		t.Fatalf("after expiry: %+v (old epoch %s)", p, e1)
	}
	if p2 := pub(t, a, "a", "short", "new2", 10, ttl); p2 != (broker.Position{Offset: 2, Epoch: p.Epoch}) {
		t.Fatalf("second append of the new epoch: %+v", p2)
	}
	es, top, oldest := read(t, a, "short", 0, 10)
	checkEntries(t, es, 1, 2, "new")
	if top != (broker.Position{Offset: 2, Epoch: p.Epoch}) || oldest != 1 {
		t.Fatalf("new epoch: %+v oldest %d", top, oldest)
	}
	wait(t, "b receiving both epochs", func() bool { return len(b.hist("short")) == 5 })
	var seen []string
	for _, m := range b.hist("short") {
		seen = append(seen, fmt.Sprintf("%d:%s", m.Offset, m.Data))
	}
	if got := strings.Join(seen, " "); got != "1:old1 2:old2 3:old3 1:new1 2:new2" {
		t.Fatalf("b received %s", got)
	}
	if _, top, _ := read(t, a, "long", 0, 10); top.Offset != 1 {
		t.Fatalf("the long room expired with the short one: %+v", top)
	}
}

// TestHistoryServerRestart: a restarted server with its store keeps the
// history and its epoch, and appends continue; one that lost its store
// gives a room a new epoch from offset 1. Watchers hear both.
func TestHistoryServerRestart(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t, "-js", "-sd", t.TempDir())
	opts := broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watchHist(t, b, "r")
	var e1 string
	for i := 1; i <= 5; i++ {
		e1 = pub(t, a, "a", "r", "m"+strconv.Itoa(i), 100, time.Minute).Epoch
	}
	// Live delivery is at most once: what the server had not sent when it
	// was killed is lost to watchers (not to the history).
	wait(t, "b hearing the first five", func() bool { return len(b.hist("r")) == 5 })
	restart := func(args ...string) {
		t.Helper()
		before := a.b.Stats().Reconnects
		srv.stop()
		if args != nil {
			srv.args = args
		}
		srv.start(t)
		wait(t, "reconnection", func() bool {
			return a.b.Stats().Reconnects > before && a.b.Stats().Connected && b.b.Stats().Connected
		})
		if err := b.b.WaitWatched(ctxT(t), "r"); err != nil {
			t.Fatal(err)
		}
	}

	restart()
	es, top, oldest := read(t, b, "r", 0, 100)
	checkEntries(t, es, 1, 5, "m")
	if top != (broker.Position{Offset: 5, Epoch: e1}) || oldest != 1 {
		t.Fatalf("after a restart with the store: %+v oldest %d", top, oldest)
	}
	if p := pub(t, a, "a", "r", "m6", 100, time.Minute); p != (broker.Position{Offset: 6, Epoch: e1}) {
		t.Fatalf("append after the restart: %+v", p)
	}
	wait(t, "b hearing m6", func() bool { return len(b.hist("r")) == 6 })

	restart("-js", "-sd", t.TempDir())
	if es, top, _ := read(t, b, "r", 0, 100); es != nil || top != (broker.Position{}) {
		t.Fatalf("after the store was lost: %v %+v", es, top)
	}
	p := pub(t, a, "a", "r", "n1", 100, time.Minute)
	if p.Offset != 1 || p.Epoch == e1 {
		t.Fatalf("after the store was lost: %+v (old epoch %s)", p, e1)
	}
	wait(t, "b hearing the new epoch", func() bool {
		h := b.hist("r")
		return len(h) > 0 && h[len(h)-1].Epoch == p.Epoch
	})
	if h := b.hist("r"); len(h) != 7 || h[5].Offset != 6 || h[6].Offset != 1 || string(h[6].Data) != "n1" {
		var offs []string
		for _, m := range h {
			offs = append(offs, fmt.Sprintf("%d:%s", m.Offset, m.Data))
		}
		t.Fatalf("b received %s\nlog of b:\n%s\nlog of a:\n%s", strings.Join(offs, " "), b.log.String(), a.log.String())
	}
}

// TestHistoryQueuedWhileDown: with the server away PublishHistory returns
// ErrQueued at once, ErrDropped past the queue; on reconnect the queued
// broadcasts are appended in their order, before a later one, and reach
// watchers (the origin too) and the history.
func TestHistoryQueuedWhileDown(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t, "-js", "-sd", t.TempDir())
	opts := broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second, Outbox: 5}
	a := newNode(t, opts, "a")
	watchHist(t, a, "r")
	e := pub(t, a, "a", "r", "m1", 100, time.Minute).Epoch
	pub(t, a, "a", "r", "m2", 100, time.Minute)
	wait(t, "a hearing both", func() bool { return len(a.hist("r")) == 2 })

	srv.stop()
	wait(t, "the loss to be seen", func() bool { return !a.b.Stats().Connected })
	for i := 3; i <= 7; i++ {
		start := time.Now()
		_, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "m"+strconv.Itoa(i)), 100, time.Minute)
		if !errors.Is(err, broker.ErrQueued) || time.Since(start) > time.Second {
			t.Fatalf("publish %d while down: %v after %v", i, err, time.Since(start))
		}
	}
	if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "lost"), 100, time.Minute); !errors.Is(err, broker.ErrDropped) {
		t.Fatalf("publish past the queue: %v", err)
	}
	if st := a.b.Stats(); st.Queued != 5 || st.Dropped != 1 {
		t.Fatalf("stats while down: %+v", st)
	}

	srv.start(t)
	wait(t, "reconnection and room in the queue", func() bool { st := a.b.Stats(); return st.Connected && st.Queued < 5 })
	// Queued behind the rest, or appended after them: offset 8 either way.
	if p, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "m8"), 100, time.Minute); err != nil && !errors.Is(err, broker.ErrQueued) {
		t.Fatal(err)
	} else if err == nil && p != (broker.Position{Offset: 8, Epoch: e}) {
		t.Fatalf("first append after the restart: %+v", p)
	}
	wait(t, "every broadcast on a", func() bool { return len(a.hist("r")) >= 8 })
	for i, m := range a.hist("r") {
		if m.Offset != uint64(i+1) || m.Epoch != e || string(m.Data) != "m"+strconv.Itoa(i+1) {
			t.Fatalf("broadcast %d arrived as %d %s %q", i, m.Offset, m.Epoch, m.Data)
		}
	}
	es, top, _ := read(t, a, "r", 0, 100)
	checkEntries(t, es, 1, 8, "m")
	if top.Epoch != e {
		t.Fatalf("epoch %s, want %s", top.Epoch, e)
	}
	if st := a.b.Stats(); st.Queued != 0 {
		t.Fatalf("stats after the drain: %+v", st)
	}
}

// TestHistoryRetryIsDeduplicated: a second try of a broadcast that was
// stored (its ack lost, say) is recognised by its Nats-Msg-Id: it reports
// the first try's position and is neither stored nor delivered twice.
func TestHistoryRetryIsDeduplicated(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a := newNode(t, opts, "a")
	watchHist(t, a, "r")
	it := queued{m: hmsg("a", "r", "m1"), size: 10, ttl: time.Minute}
	p1, err := a.b.appendOnce(ctxT(t), &it, "retried")
	if err != nil {
		t.Fatal(err)
	}
	for _, forget := range []bool{false, true} { // expecting itself as the last, or reading it
		if forget {
			a.b.h.forgetLast(a.b.histSubject("r"))
		}
		if p, err := a.b.appendOnce(ctxT(t), &it, "retried"); err != nil || p != p1 {
			t.Fatalf("retry: %+v %v, want %+v", p, err, p1)
		}
	}
	if p := pub(t, a, "a", "r", "m2", 10, time.Minute); p.Offset != 2 {
		t.Fatalf("next append at %+v", p)
	}
	es, _, _ := read(t, a, "r", 0, 10)
	checkEntries(t, es, 1, 2, "m")
	wait(t, "both broadcasts", func() bool { return len(a.hist("r")) >= 2 })
	if h := a.hist("r"); len(h) != 2 || string(h[0].Data) != "m1" || string(h[1].Data) != "m2" {
		t.Fatalf("received %+v", h)
	}
}

// TestHistoryWaitWatched: right after WatchRoom (whose subscription is
// made on another goroutine), WaitWatched returns only once a broadcast
// appended by another node afterwards is sure to arrive. A room not
// watched is an error at once.
func TestHistoryWaitWatched(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	for i := range 20 {
		room := "w" + strconv.Itoa(i)
		b.b.WatchRoom(room)
		if err := b.b.WaitWatched(ctxT(t), room); err != nil {
			t.Fatal(err)
		}
		pub(t, a, "a", room, "hello", 10, time.Minute)
		wait(t, "the broadcast on "+room, func() bool { return len(b.hist(room)) == 1 })
	}
	start := time.Now()
	if err := b.b.WaitWatched(ctxT(t), "unwatched"); err == nil || !strings.Contains(err.Error(), "not watched") || time.Since(start) > time.Second {
		t.Fatalf("WaitWatched on a room not watched: %v after %v", err, time.Since(start))
	}
	b.b.UnwatchRoom("w0")
	if err := b.b.WaitWatched(ctxT(t), "w0"); err == nil {
		t.Fatal("WaitWatched on an unwatched room succeeded")
	}
}

// TestHistoryWithoutJetStream: a server without JetStream makes history
// calls fail with an error that says so (not queue), and New warns.
func TestHistoryWithoutJetStream(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t)
	a := newNode(t, broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second}, "a")
	_, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "x"), 10, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "JetStream is not enabled") || !strings.Contains(err.Error(), "p_history") {
		t.Fatalf("PublishHistory without JetStream: %v", err)
	}
	if _, _, _, err := a.b.ReadHistory(ctxT(t), "r", 0, 10); err == nil || !strings.Contains(err.Error(), "JetStream is not enabled") {
		t.Fatalf("ReadHistory without JetStream: %v", err)
	}
	wait(t, "the warning at start", func() bool { return strings.Contains(a.log.String(), "JetStream is not enabled") })
}

// TestHistoryForeignStream: a stream of our name that does not republish
// (made by hand) is refused with a message that says what to do.
func TestHistoryForeignStream(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a := newNode(t, opts, "a")
	name := streamName(opts.Prefix)
	if _, err := a.b.h.js.CreateStream(ctxT(t), jetstream.StreamConfig{Name: name, Subjects: []string{opts.Prefix + ".hist.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.b.h.js.DeleteStream(context.Background(), name) })
	if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "x"), 10, time.Minute); err == nil || !strings.Contains(err.Error(), "does not republish") {
		t.Fatalf("PublishHistory into a foreign stream: %v", err)
	}
}

func TestStreamName(t *testing.T) {
	seen := map[string]string{}
	for _, p := range []string{"moonwire", "a.b", "a_b", "a/b", strings.Repeat("x", 300), "t.0"} {
		n := streamName(p)
		if strings.ContainsAny(n, ". */\\>") || len(n) > 100 {
			t.Fatalf("streamName(%q) = %q", p, n)
		}
		if o, ok := seen[n]; ok {
			t.Fatalf("%q and %q share stream %q", p, o, n)
		}
		seen[n] = p
	}
	if streamName("moonwire") != "moonwire_history" {
		t.Fatal(streamName("moonwire"))
	}
}

// TestReorder: broadcasts with history come out in offset order, once;
// a missing one is waited for reorderWindow, then skipped; a room heard
// first mid-epoch waits a window for what may precede; a new epoch
// releases the old one's and a late broadcast of an old epoch is refused.
func TestReorder(t *testing.T) {
	var o reorder
	want := broker.NewInterest()
	var out []string
	emit := func(m broker.Message) { out = append(out, fmt.Sprintf("%s%d", m.Epoch, m.Offset)) }
	t0 := time.Now()
	add := func(epoch string, off uint64, at time.Duration) {
		o.add(broker.Message{Room: "r", Epoch: epoch, Offset: off}, t0.Add(at), emit, want)
	}
	expect := func(what, want string) {
		t.Helper()
		if got := strings.Join(out, " "); got != want {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
		out = nil
	}
	add("e", 1, 0)
	add("e", 3, 0) // 2 and 3 swapped
	expect("held", "e1")
	add("e", 2, 0)
	expect("swap", "e2 e3")
	add("e", 2, 0)
	add("e", 3, 0)
	expect("repeats", "")
	add("e", 5, 0) // 4 lost
	add("e", 6, 0)
	o.expire(t0.Add(reorderWindow/2), emit)
	expect("within the window", "")
	o.expire(t0.Add(reorderWindow), emit)
	expect("after the window", "e5 e6")
	add("e", 4, reorderWindow)
	expect("late", "")
	add("e", 9, reorderWindow) // 7, 8 lost
	add("f", 2, reorderWindow) // a new epoch, its 1 swapped
	expect("the old epoch released", "e9")
	add("f", 1, reorderWindow)
	expect("the new epoch", "f1 f2")
	add("e", 10, reorderWindow)
	expect("an old epoch", "")
	if o.holding() {
		t.Fatal("still holding")
	}

	// Heard first mid-epoch: 11 may follow 12, so both wait a window.
	var p reorder
	p.add(broker.Message{Room: "q", Epoch: "g", Offset: 12}, t0, emit, want)
	p.add(broker.Message{Room: "q", Epoch: "g", Offset: 11}, t0, emit, want)
	expect("first heard", "")
	p.expire(t0.Add(reorderWindow), emit)
	expect("first heard, after the window", "g11 g12")
	p.add(broker.Message{Room: "q", Epoch: "g", Offset: 13}, t0, emit, want)
	expect("then in order", "g13")
}

// TestReceiveDrainsBeforeGivingUp: a node busy with what it received
// (deliveries that take longer than the reorder window, one at a time
// longer than the ticker's period) does not skip a broadcast that waits
// in its own queue: the window gives up only on what has not arrived.
// Before, the receive loop chose between a fresh tick and its queue at
// random, and skipped it nearly every time.
func TestReceiveDrainsBeforeGivingUp(t *testing.T) {
	b := &Broker{msgs: make(chan *natsgo.Msg, 16), stop: make(chan struct{}), want: broker.NewInterest()}
	var (
		mu  sync.Mutex
		got []string
	)
	b.recv.Store(&target{node: "me", fn: func(m broker.Message) {
		if m.Offset == 0 {
			// A slow local fan-out.
			d, _ := time.ParseDuration(string(m.Data))
			time.Sleep(d)
			return
		}
		mu.Lock()
		got = append(got, fmt.Sprintf("%s:%d", m.Room, m.Offset))
		mu.Unlock()
	}})
	b.wg.Add(1)
	go b.receive()
	defer func() { close(b.stop); b.wg.Wait() }()
	send := func(m broker.Message) { b.msgs <- &natsgo.Msg{Data: broker.AppendWire(nil, &m)} }
	slow := func(d time.Duration) {
		send(broker.Message{Op: broker.OpBroadcast, Origin: "other", Room: "x", Data: []byte(d.String())})
	}
	for round := range 3 {
		room := fmt.Sprintf("r%d", round)
		hist := func(off uint64) {
			send(broker.Message{Op: broker.OpBroadcast, Origin: "other", Room: room, Epoch: "e", Offset: off, Data: []byte("h")})
		}
		hist(1)
		hist(3) // 2 and 3 swapped: 3 is held
		slow(reorderWindow)
		for range 8 {
			slow(reorderWindow / 2) // each past a tick: a fresh one waits beside the queue
		}
		hist(2) // queued behind the slow deliveries
		want := []string{room + ":1", room + ":2", room + ":3"}
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			done := slices.Contains(got, room+":3")
			mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: got %v, want %v", round, got, want)
			}
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: got %v, want %v", round, got, want)
		}
		got = nil
		mu.Unlock()
	}
}

// TestCheckHistoryNeedsJetStream: a nats-server without JetStream is
// refused by CheckHistory (moonwire.New turns it into a config error
// naming broker.url); one with it passes, and so does a broker not
// connected yet.
func TestCheckHistoryNeedsJetStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain := newNatsProc(t) // no -js
	b, err := New(broker.Options{URL: "nats://" + plain.addr, Prefix: prefix(), Timeout: 5 * time.Second, Outbox: 10,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.CheckHistory(ctx); err == nil || !strings.Contains(err.Error(), "JetStream is not enabled") {
		t.Fatalf("without -js: %v", err)
	}

	js, err := New(broker.Options{URL: shared(t), Prefix: prefix(), Timeout: 5 * time.Second, Outbox: 10,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer js.Close()
	if err := js.CheckHistory(ctx); err != nil {
		t.Fatalf("with JetStream: %v", err)
	}

	gone, err := New(broker.Options{URL: "nats://127.0.0.1:" + freePort(t), Prefix: prefix(), Timeout: time.Second, Outbox: 10,
		StartDegraded: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	if err := gone.CheckHistory(ctx); err != nil {
		t.Fatalf("not connected yet: %v", err)
	}
}
