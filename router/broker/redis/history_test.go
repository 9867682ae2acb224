package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/router/broker"
)

func histMsg(origin, room, data string) broker.Message {
	return broker.Message{Op: broker.OpBroadcast, Origin: origin, Room: room, Data: []byte(data)}
}

// offsets returns the offsets n received in room, in arrival order.
func (n *node) offsets(room string) []uint64 {
	var out []uint64
	for _, m := range n.got() {
		if m.Room == room && m.Offset != 0 {
			out = append(out, m.Offset)
		}
	}
	return out
}

// TestHistoryOffsetsInOrderOnEveryNode: three nodes publish to one room
// at once; every node, the publishers included, receives offsets 1..N
// exactly once and in order, and each publisher got the offsets it was
// told.
func TestHistoryOffsetsInOrderOnEveryNode(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	nodes := []*node{newNode(t, opts, "a"), newNode(t, opts, "b"), newNode(t, opts, "c")}
	ctx := context.Background()
	for _, n := range nodes {
		n.b.WatchRoom("r")
		if err := n.b.WaitWatched(ctx, "r"); err != nil {
			t.Fatal(err)
		}
	}
	const per = 300
	var wg sync.WaitGroup
	told := make([][]uint64, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				pos, err := n.b.PublishHistory(ctx, histMsg(string(rune('a'+i)), "r", fmt.Sprintf("%d:%d", i, k)), 1000, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				told[i] = append(told[i], pos.Offset)
			}
		}()
	}
	wg.Wait()
	const total = 3 * per
	for i, n := range nodes {
		wait(t, fmt.Sprintf("node %d to receive %d", i, total), func() bool { return len(n.offsets("r")) >= total })
		for k, off := range n.offsets("r") {
			if off != uint64(k+1) {
				t.Fatalf("node %d: message %d has offset %d", i, k, off)
			}
		}
		for k := 1; k < len(told[i]); k++ {
			if told[i][k] <= told[i][k-1] {
				t.Fatalf("publisher %d was told offsets out of order: %v", i, told[i][k-1:k+1])
			}
		}
	}
	// Per publisher, its messages are in its publish order.
	seen := map[byte]int{}
	for _, m := range nodes[0].got() {
		if m.Room != "r" {
			continue
		}
		var p, k int
		fmt.Sscanf(string(m.Data), "%d:%d", &p, &k)
		if k != seen[byte(p)] {
			t.Fatalf("publisher %d: got %d, want %d", p, k, seen[byte(p)])
		}
		seen[byte(p)]++
	}
}

func TestHistoryReadTrimStamp(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a := newNode(t, opts, "a")
	ctx := context.Background()
	es, top, oldest, err := a.b.ReadHistory(ctx, "r", 0, 10)
	if err != nil || len(es) != 0 || top != (broker.Position{}) || oldest != 0 {
		t.Fatalf("a room never written: %v %+v %d %v", es, top, oldest, err)
	}
	var epoch string
	for i := 1; i <= 8; i++ {
		m := histMsg("a", "r", `{"n":`+strconv.Itoa(i)+`,"t":"{offset}"}`)
		m.Stamp = i%2 == 0
		pos, err := a.b.PublishHistory(ctx, m, 5, time.Minute)
		if err != nil || pos.Offset != uint64(i) {
			t.Fatalf("publish %d: %+v %v", i, pos, err)
		}
		epoch = pos.Epoch
	}
	es, top, oldest, err = a.b.ReadHistory(ctx, "r", 4, 2)
	if err != nil || top != (broker.Position{Offset: 8, Epoch: epoch}) || oldest != 4 {
		t.Fatalf("after trimming to 5: top %+v oldest %d err %v", top, oldest, err)
	}
	if len(es) != 2 || es[0].Offset != 5 || es[1].Offset != 6 {
		t.Fatalf("since 4, limit 2: %+v", es)
	}
	if string(es[0].Data) != `{"n":5,"t":"{offset}"}` {
		t.Fatalf("unstamped entry: %s", es[0].Data)
	}
	if want := `{"offset":6,"epoch":"` + epoch + `","n":6,"t":"{offset}"}`; string(es[1].Data) != want {
		t.Fatalf("stamped entry: %s, want %s", es[1].Data, want)
	}
}

func TestHistoryExpiryTakesANewEpoch(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a := newNode(t, opts, "a")
	ctx := context.Background()
	p1, err := a.b.PublishHistory(ctx, histMsg("a", "r", "x"), 5, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, "expiry", func() bool {
		_, top, _, _ := a.b.ReadHistory(ctx, "r", 0, 5)
		return top.Epoch == ""
	})
	p2, err := a.b.PublishHistory(ctx, histMsg("a", "r", "y"), 5, time.Minute)
	if err != nil || p2.Offset != 1 || p2.Epoch == p1.Epoch {
		t.Fatalf("after expiry: %+v (before %+v) %v", p2, p1, err)
	}
}

// TestHistoryQueuedAcrossARestart: while Redis is away, publishes are
// queued in order and appear after it returns; its history was lost with
// it (no persistence), so the epoch is new.
func TestHistoryQueuedAcrossARestart(t *testing.T) {
	t.Parallel()
	srv := newRedisProc(t)
	opts := broker.Options{URL: "redis://" + srv.addr, Prefix: "p", Timeout: 2 * time.Second, Outbox: 100}
	a, b := newNode(t, opts, "a"), newNode(t, opts, "b")
	ctx := context.Background()
	b.b.WatchRoom("r")
	if err := b.b.WaitWatched(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	before, err := a.b.PublishHistory(ctx, histMsg("a", "r", "before"), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	srv.stop(t)
	wait(t, "the loss", func() bool { return !a.b.Stats().Connected })
	for i := range 5 {
		if _, err := a.b.PublishHistory(ctx, histMsg("a", "r", "during"+strconv.Itoa(i)), 10, time.Minute); !errors.Is(err, broker.ErrQueued) {
			t.Fatalf("publish while down: %v, want ErrQueued", err)
		}
	}
	srv.start(t)
	// Live delivery is at most once (b may resubscribe after a flushed
	// its queue); the history has them all, in order.
	var es []broker.Entry
	var top broker.Position
	wait(t, "the queued messages in the history", func() bool {
		es, top, _, err = b.b.ReadHistory(ctx, "r", 0, 10)
		return err == nil && len(es) == 5
	})
	for i, e := range es {
		if string(e.Data) != "during"+strconv.Itoa(i) || e.Offset != uint64(i+1) {
			t.Fatalf("entry %d: %d %q", i, e.Offset, e.Data)
		}
	}
	if top.Epoch == before.Epoch {
		t.Fatal("the history was lost with Redis but the epoch is the same")
	}
	wait(t, "a's queue to drain", func() bool { return a.b.Stats().Queued == 0 })
}

// TestHistoryConcurrentCallersOnOneNode: many goroutines of one node
// publishing to one room at once (lanes, the server API, suspended
// callbacks) each get an offset of their own, and every message is
// stored exactly once. Found when publish ids were taken before the
// queue: an id overtaken in the queue by a higher one was skipped as a
// retry, its message lost and its caller told another's offset.
func TestHistoryConcurrentCallersOnOneNode(t *testing.T) {
	t.Parallel()
	opts := broker.Options{URL: shared(t), Prefix: prefix(t)}
	a := newNode(t, opts, "a")
	ctx := context.Background()
	const callers, per = 16, 100
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		told = map[uint64]string{}
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				data := fmt.Sprintf("%d:%d", c, k)
				pos, err := a.b.PublishHistory(ctx, histMsg("a", "r", data), 10*callers*per, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := told[pos.Offset]; dup {
					t.Errorf("offset %d told to %s and to %s", pos.Offset, prev, data)
				}
				told[pos.Offset] = data
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	es, top, _, err := a.b.ReadHistory(ctx, "r", 0, 10*callers*per)
	if err != nil {
		t.Fatal(err)
	}
	if top.Offset != callers*per || len(es) != callers*per {
		t.Fatalf("%d entries, top %d: want %d", len(es), top.Offset, callers*per)
	}
	for _, e := range es {
		if told[e.Offset] != string(e.Data) {
			t.Fatalf("offset %d holds %q, its publisher was told it for %q", e.Offset, e.Data, told[e.Offset])
		}
	}
}

// TestCheckHistoryPermissions: a Redis user whose ACL forbids a command
// history needs (the script, loading it, or one the script runs) is
// refused by CheckHistory with Redis's NOPERM; a user with every
// permission passes, and so does a broker not connected yet.
func TestCheckHistoryPermissions(t *testing.T) {
	t.Parallel()
	addr := startRedis(t)
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	defer admin.Close()
	ctx := context.Background()
	for _, c := range []struct {
		user string
		rule string // what the user may not do; "" for nothing
		want string
	}{
		{"full", "", ""},
		{"noeval", "-evalsha", "NOPERM"},
		{"noscript", "-script", "SCRIPT LOAD"},
		{"noxadd", "-xadd", "can't run this command"},
		{"noxrange", "-xrange", "XRANGE"},
	} {
		t.Run(c.user, func(t *testing.T) {
			args := []any{"ACL", "SETUSER", c.user, "on", ">pw", "~*", "&*", "+@all"}
			if c.rule != "" {
				args = append(args, c.rule)
			}
			if err := admin.Do(ctx, args...).Err(); err != nil {
				t.Fatal(err)
			}
			// A fresh Redis knows no script yet, so the first EVALSHA
			// asks for SCRIPT LOAD: flush them for each user.
			if err := admin.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			b, err := New(broker.Options{URL: "redis://" + c.user + ":pw@" + addr, Prefix: "ck" + c.user, Timeout: 5 * time.Second, Outbox: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			err = b.CheckHistory(cctx)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	t.Run("degraded", func(t *testing.T) {
		b, err := New(broker.Options{URL: "redis://127.0.0.1:" + freePort(t), Prefix: "ckd", Timeout: time.Second, Outbox: 10, StartDegraded: true,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.CheckHistory(ctx); err != nil {
			t.Fatalf("a broker not connected yet: %v", err)
		}
	})
}
