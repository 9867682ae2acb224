package nats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/router/broker"
)

// stampedMsg is a broadcast whose data, a JSON object, gets its position.
func stampedMsg(origin, room, data string) broker.Message {
	m := hmsg(origin, room, `{"d":"`+data+`"}`)
	m.Stamp = true
	return m
}

// stampOf checks that data carries p (broker.Stamp) and returns what the
// publisher wrote ("d").
func stampOf(t *testing.T, data []byte, p broker.Position) string {
	t.Helper()
	want := fmt.Sprintf(`{"offset":%d,"epoch":"%s","d":"`, p.Offset, p.Epoch)
	if !bytes.HasPrefix(data, []byte(want)) || !bytes.HasSuffix(data, []byte(`"}`)) {
		t.Fatalf("data %q is not stamped with %+v", data, p)
	}
	return string(data[len(want) : len(data)-2])
}

// storedMsgs is how many stream messages hold room's history.
func storedMsgs(t *testing.T, n *node, room string) uint64 {
	t.Helper()
	subj := n.b.histSubject(room)
	st, err := n.b.h.js.Stream(ctxT(t), n.b.h.name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// TestHistoryBatchTwoNodes: two brokers on one server, 8 callers each,
// append 1,200 stamped broadcasts to one room at once. Appends are
// batched (fewer stream messages than broadcasts), yet the offsets are
// 1..1200, each once, in one epoch, increasing for each caller, each
// broadcast stamped with its own; both nodes receive 1..1200 once and in
// order; the history reads back the same, whole and from within units.
func TestHistoryBatchTwoNodes(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	watchHist(t, a, "room")
	watchHist(t, b, "room")
	const callers, each = 8, 75
	total := 2 * callers * each
	var mu sync.Mutex
	data := map[uint64]string{}
	epochs := map[string]bool{}
	var wg sync.WaitGroup
	for _, n := range []*node{a, b} {
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				prev := uint64(0)
				for i := range each {
					d := fmt.Sprintf("%s-%d-%d", n.b.h.idPrefix, c, i)
					p, err := n.b.PublishHistory(ctxT(t), stampedMsg("x", "room", d), 10000, time.Minute)
					if err != nil {
						t.Errorf("publish %s: %v", d, err)
						return
					}
					if p.Offset <= prev {
						t.Errorf("caller %s-%d: offset %d after %d", n.b.h.idPrefix, c, p.Offset, prev)
					}
					prev = p.Offset
					mu.Lock()
					if old, dup := data[p.Offset]; dup {
						t.Errorf("offset %d given to %s and %s", p.Offset, old, d)
					}
					data[p.Offset], epochs[p.Epoch] = d, true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	epoch := contiguous(t, data, epochs, total)
	if n := storedMsgs(t, a, "room"); n >= uint64(total) {
		t.Errorf("%d stream messages for %d broadcasts: nothing was batched", n, total)
	} else {
		t.Logf("%d broadcasts in %d stream messages", total, n)
	}
	for _, n := range []*node{a, b} {
		wait(t, "every broadcast on a node", func() bool { return len(n.hist("room")) >= total })
		for i, m := range n.hist("room") {
			p := broker.Position{Offset: uint64(i + 1), Epoch: epoch}
			if m.Offset != p.Offset || m.Epoch != epoch || stampOf(t, m.Data, p) != data[p.Offset] {
				t.Fatalf("broadcast %d arrived as %d %s %q", i+1, m.Offset, m.Epoch, m.Data)
			}
		}
		if h := n.hist("room"); len(h) != total {
			t.Fatalf("%d broadcasts received, want %d", len(h), total)
		}
	}
	// Replay after batches: whole, by the consumer, by the walk, from
	// within a unit, limited.
	for _, r := range []struct {
		since uint64
		limit int
	}{{0, 10000}, {uint64(total) - 5, 100}, {uint64(total) - 40, 100}, {1, 1}, {7, 300}, {uint64(total) / 2, 3}, {uint64(total) - 1, 1}} {
		es, top, oldest := read(t, b, "room", r.since, r.limit)
		if top != (broker.Position{Offset: uint64(total), Epoch: epoch}) || oldest != 1 {
			t.Fatalf("read(%d, %d): top %+v oldest %d", r.since, r.limit, top, oldest)
		}
		want := min(r.limit, total-int(r.since))
		if len(es) != want {
			t.Fatalf("read(%d, %d): %d entries, want %d", r.since, r.limit, len(es), want)
		}
		for i, e := range es {
			p := broker.Position{Offset: r.since + 1 + uint64(i), Epoch: epoch}
			if e.Offset != p.Offset || stampOf(t, e.Data, p) != data[p.Offset] {
				t.Fatalf("read(%d, %d): entry %d is %d %q", r.since, r.limit, i, e.Offset, e.Data)
			}
		}
	}
}

// TestHistoryBatchTrimmed: a room whose size is smaller than its units
// keeps (and reads back) only its last size broadcasts.
func TestHistoryBatchTrimmed(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a := newNode(t, opts, "a")
	const total, size = 300, 50
	var wg sync.WaitGroup
	for c := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range total / 10 {
				if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "t", fmt.Sprintf("%d-%d", c, i)), size, time.Minute); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	es, top, oldest := read(t, a, "t", 0, 1000)
	if top.Offset != total || oldest != total-size+1 || len(es) != size || es[0].Offset != oldest || es[size-1].Offset != total {
		t.Fatalf("top %+v oldest %d, %d entries", top, oldest, len(es))
	}
	for i, e := range es {
		if e.Offset != oldest+uint64(i) {
			t.Fatalf("entry %d at offset %d", i, e.Offset)
		}
	}
}

// TestHistoryBatchBounds: a unit holds at most unitMax broadcasts and
// about unitBytes bytes; with opts.Outbox 4 at most 4 broadcasts wait
// (the rest are ErrDropped at once), and what was appended is
// contiguous.
func TestHistoryBatchBounds(t *testing.T) {
	t.Parallel()
	opts := sharedHist(t)
	a := newNode(t, opts, "a")
	big := strings.Repeat("x", 20<<10)
	var wg sync.WaitGroup
	for c := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2 {
				if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "big", big+strconv.Itoa(c*2+i)), 1000, time.Minute); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for c := range 600 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "many", strconv.Itoa(c)), 1000, time.Minute); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	st, err := a.b.h.js.Stream(ctxT(t), a.b.h.name)
	if err != nil {
		t.Fatal(err)
	}
	for room, want := range map[string]int{"big": 80, "many": 600} {
		subj := a.b.histSubject(room)
		got := 0
		for seq := uint64(1); ; {
			raw, err := st.GetMsg(ctxT(t), seq, jetstream.WithGetMsgSubject(subj))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			l, err := parseLast(raw)
			if err != nil {
				t.Fatal(err)
			}
			if l.count > unitMax || l.count > 1 && len(raw.Data) > unitBytes+itemOverhead {
				t.Fatalf("room %s: a unit of %d broadcasts, %d bytes", room, l.count, len(raw.Data))
			}
			got += int(l.count)
			seq = raw.Sequence + 1
		}
		if got != want {
			t.Fatalf("room %s: %d broadcasts stored, want %d", room, got, want)
		}
	}

	// The bound on waiting broadcasts.
	small := opts
	small.Outbox = 4
	s := newNode(t, small, "s")
	var mu sync.Mutex
	var offs []uint64
	dropped, most := 0, 0
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := s.b.h.inflightLen()
			mu.Lock()
			most = max(most, n)
			mu.Unlock()
			time.Sleep(50 * time.Microsecond)
		}
	}()
	for c := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.b.PublishHistory(ctxT(t), hmsg("s", "bounded", strconv.Itoa(c)), 1000, time.Minute)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, broker.ErrDropped):
				dropped++
			case err != nil:
				t.Error(err)
			default:
				offs = append(offs, p.Offset)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watched
	if most > 4 || len(offs)+dropped != 64 || len(offs) == 0 {
		t.Fatalf("at most %d waiting (bound 4), %d appended, %d dropped", most, len(offs), dropped)
	}
	t.Logf("bound 4: at most %d waiting, %d appended, %d dropped", most, len(offs), dropped)
	if st := s.b.Stats(); st.Dropped != uint64(dropped) {
		t.Fatalf("Stats.Dropped %d, want %d", st.Dropped, dropped)
	}
	es, top, _ := read(t, s, "bounded", 0, 100)
	if top.Offset != uint64(len(offs)) || len(es) != len(offs) {
		t.Fatalf("top %+v, %d entries, %d appended", top, len(es), len(offs))
	}
}

// TestHistoryRestartMidBatch: the server is killed while 16 callers
// append to one room in units. Every call ends with a position or an
// error (ErrQueued: appended on reconnect); every position reported is in
// the history after the restart (the store kept) with its broadcast, the
// queued ones are stored once each (a unit retried after a lost ack is
// recognised), and the offsets stay contiguous in one epoch.
func TestHistoryRestartMidBatch(t *testing.T) {
	t.Parallel()
	srv := newNatsProc(t, "-js", "-sd", t.TempDir())
	opts := broker.Options{URL: "nats://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second}
	a := newNode(t, opts, "a")
	if _, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "first"), 100000, time.Hour); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[string]broker.Position{}
	queued := map[string]bool{}
	dropped := map[string]bool{}
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				d := fmt.Sprintf("%d-%d", c, i)
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				p, err := a.b.PublishHistory(ctx, hmsg("a", "r", d), 100000, time.Hour)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					acked[d] = p
				case errors.Is(err, broker.ErrQueued):
					queued[d] = true
				case errors.Is(err, broker.ErrDropped):
					dropped[d] = true
				default:
					t.Errorf("publish %s: %v", d, err)
				}
				mu.Unlock()
			}
		}()
	}
	wait(t, "appends under way", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 300 })
	srv.stop()
	wait(t, "calls while down", func() bool { mu.Lock(); defer mu.Unlock(); return len(queued) > 50 })
	before := a.b.Stats().Reconnects
	srv.start(t)
	wait(t, "reconnection", func() bool { return a.b.Stats().Reconnects > before })
	wg.Wait()
	wait(t, "the queue drained", func() bool { st := a.b.Stats(); return st.Queued == 0 && a.b.h.inflightLen() == 0 })
	if t.Failed() {
		return
	}
	if p, err := a.b.PublishHistory(ctxT(t), hmsg("a", "r", "last"), 100000, time.Hour); err != nil {
		t.Fatal(err)
	} else {
		acked["last"] = p
	}
	es, top, oldest := read(t, a, "r", 0, 100000)
	if oldest != 1 || top.Offset != uint64(len(es)) {
		t.Fatalf("top %+v oldest %d with %d entries", top, oldest, len(es))
	}
	seen := map[string]uint64{}
	for i, e := range es {
		if e.Offset != uint64(i+1) {
			t.Fatalf("entry %d at offset %d", i, e.Offset)
		}
		if old, dup := seen[string(e.Data)]; dup {
			t.Fatalf("%q stored at %d and %d", e.Data, old, e.Offset)
		}
		seen[string(e.Data)] = e.Offset
	}
	for d, p := range acked {
		if p.Epoch != top.Epoch || seen[d] != p.Offset {
			t.Fatalf("%s acknowledged at %+v, stored at %d (epoch %s)", d, p, seen[d], top.Epoch)
		}
	}
	missing := 0
	for d := range queued {
		if _, ok := seen[d]; !ok {
			missing++
		}
	}
	// A dropped broadcast may have been stored (its unit sent, then not
	// acknowledged, then refused by the full queue), once at most.
	if missing > 0 || len(es) < 1+len(acked)+len(queued) || len(es) > 1+len(acked)+len(queued)+len(dropped) {
		t.Fatalf("%d stored, %d acknowledged, %d queued of which %d missing, %d dropped\nlog:\n%s",
			len(es), len(acked), len(queued), missing, len(dropped), a.log.String())
	}
	t.Logf("%d acknowledged, %d queued, %d dropped, %d stream messages; a unit in flight at the kill: %v", len(acked), len(queued),
		len(dropped), storedMsgs(t, a, "r"), strings.Contains(a.log.String(), "not acknowledged, queued"))
}

// TestDecodeUnit: a unit's framing round-trips and malformed ones are
// refused, never read past their end.
func TestDecodeUnit(t *testing.T) {
	ms := []broker.Message{hmsg("a", "r", "one"), hmsg("a", "r", ""), hmsg("a", "r", strings.Repeat("z", 300))}
	for i := range ms {
		ms[i].Offset, ms[i].Epoch = uint64(7+i), "e"
	}
	data := encodeUnit(ms)
	wires, err := decodeUnit(data, 3)
	if err != nil || len(wires) != 3 {
		t.Fatal(len(wires), err)
	}
	for i, w := range wires {
		m, err := broker.DecodeWire(w)
		if err != nil || m.Offset != uint64(7+i) || string(m.Data) != string(ms[i].Data) {
			t.Fatalf("broadcast %d: %+v %v", i, m, err)
		}
	}
	for _, c := range []struct {
		data  []byte
		count uint64
	}{
		{data, 2}, {data, 4}, {data[:len(data)-1], 3}, {data, 0}, {data, unitReadMax + 1},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 2}, {[]byte{5, 1}, 2}, {nil, 2},
	} {
		if _, err := decodeUnit(c.data, c.count); err == nil {
			t.Fatalf("decodeUnit(%x, %d) accepted", c.data, c.count)
		}
	}
}
