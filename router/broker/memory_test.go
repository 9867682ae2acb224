package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder collects what one node receives.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recorder) fn(m Message) {
	m.Data = append([]byte(nil), m.Data...) // fn must not keep m.Data
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) got() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func subscribe(t *testing.T, b Broker, node string) (*recorder, func()) {
	t.Helper()
	r := &recorder{}
	cancel, err := b.Subscribe(node, r.fn)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", node, err)
	}
	return r, cancel
}

func TestMemoryDeliversToAllButOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		nodes  []string
		origin string
		want   []string // nodes that receive
	}{
		{"from a member", []string{"a", "b", "c"}, "a", []string{"b", "c"}},
		{"from an outsider", []string{"a", "b", "c"}, "x", []string{"a", "b", "c"}},
		{"lone node", []string{"a"}, "a", nil},
		{"no subscribers", nil, "a", nil},
		{"empty origin", []string{"a", "b"}, "", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := NewMemory()
			defer b.Close()
			recs := map[string]*recorder{}
			for _, n := range tc.nodes {
				recs[n], _ = subscribe(t, b, n)
			}
			m := Message{Op: OpBroadcast, Origin: tc.origin, Room: "lobby", Except: "a-1", Binary: true,
				Data: []byte{0, 1, 2}, Code: 0, Reason: ""}
			if err := b.Publish(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			// Delivery is synchronous: everything is there when Publish
			// returns.
			for _, n := range tc.nodes {
				got := recs[n].got()
				want := slices.Contains(tc.want, n)
				switch {
				case want && len(got) != 1:
					t.Fatalf("node %q got %d messages, want 1", n, len(got))
				case !want && len(got) != 0:
					t.Fatalf("node %q (the origin) got %d messages", n, len(got))
				case want:
					g := got[0]
					if g.Op != m.Op || g.Origin != m.Origin || g.Room != m.Room || g.Except != m.Except ||
						g.Binary != m.Binary || string(g.Data) != string(m.Data) {
						t.Fatalf("node %q got %+v, want %+v", n, g, m)
					}
				}
			}
		})
	}
}

func TestMemoryMessageFields(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	r, _ := subscribe(t, b, "b")
	msgs := []Message{
		{Op: OpBroadcast, Origin: "a", Room: "r", Except: "a-1", Data: []byte("hi")},
		{Op: OpSend, Origin: "a", Target: "b-7", Binary: true, Data: []byte{0xff}},
		{Op: OpClose, Origin: "a", Target: "b-7", Code: 4000, Reason: "kicked"},
	}
	for _, m := range msgs {
		if err := b.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	got := r.got()
	if len(got) != len(msgs) {
		t.Fatalf("got %d messages", len(got))
	}
	for i := range msgs {
		if fmt.Sprint(got[i]) != fmt.Sprint(msgs[i]) {
			t.Errorf("message %d: got %+v, want %+v", i, got[i], msgs[i])
		}
	}
}

// TestMemoryPublishOrder: each subscriber sees one publisher's messages in
// publish order, also while other publishers run concurrently.
func TestMemoryPublishOrder(t *testing.T) {
	t.Parallel()
	const publishers, per = 4, 500
	b := NewMemory()
	recs := make([]*recorder, 3)
	for i := range recs {
		recs[i], _ = subscribe(t, b, fmt.Sprintf("sub%d", i))
	}
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				m := Message{Op: OpSend, Origin: fmt.Sprintf("pub%d", p), Data: []byte(fmt.Sprint(i))}
				if err := b.Publish(context.Background(), m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for si, r := range recs {
		got := r.got()
		if len(got) != publishers*per {
			t.Fatalf("subscriber %d got %d messages, want %d", si, len(got), publishers*per)
		}
		next := map[string]int{}
		for _, m := range got {
			if want := fmt.Sprint(next[m.Origin]); string(m.Data) != want {
				t.Fatalf("subscriber %d: from %s got %s, want %s", si, m.Origin, m.Data, want)
			}
			next[m.Origin]++
		}
	}
}

func TestMemoryCancel(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	ra, cancelA := subscribe(t, b, "a")
	rb, cancelB := subscribe(t, b, "b")
	pub := func(origin, data string) {
		t.Helper()
		if err := b.Publish(context.Background(), Message{Op: OpSend, Origin: origin, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	pub("x", "1")
	cancelA()
	pub("x", "2")
	cancelA() // idempotent
	pub("x", "3")
	if got := len(ra.got()); got != 1 {
		t.Fatalf("cancelled node got %d messages, want 1", got)
	}
	if got := len(rb.got()); got != 3 {
		t.Fatalf("node b got %d messages, want 3", got)
	}
	cancelB()
	pub("x", "4")
	if got := len(rb.got()); got != 3 {
		t.Fatalf("node b got %d messages after cancel", got)
	}
	// Subscribing again after a cancel works.
	ra2, _ := subscribe(t, b, "a")
	pub("x", "5")
	if got := ra2.got(); len(got) != 1 || string(got[0].Data) != "5" {
		t.Fatalf("resubscribed node got %v", got)
	}
}

func TestMemoryHasPeers(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	check := func(self string, want bool) {
		t.Helper()
		if got := b.HasPeers(self); got != want {
			t.Fatalf("HasPeers(%q) = %v, want %v", self, got, want)
		}
	}
	check("a", false)
	_, cancelA := subscribe(t, b, "a")
	check("a", false)
	check("b", true) // a is a peer of b even if b is not subscribed
	_, cancelB := subscribe(t, b, "b")
	check("a", true)
	check("b", true)
	cancelA()
	check("a", true)
	check("b", false)
	cancelB()
	check("b", false)
	check("", false)
}

// TestMemoryConcurrentSubscribe runs publishers against subscribe/cancel
// churn; under -race it proves the map is guarded.
func TestMemoryConcurrentSubscribe(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = b.Publish(context.Background(), Message{Op: OpSend, Origin: fmt.Sprint("p", p)})
				_ = b.HasPeers("p0")
			}
		}()
	}
	for i := range 300 {
		_, cancel := subscribe(t, b, fmt.Sprint("n", i%7))
		cancel()
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publishers did not stop")
	}
}

func TestMemoryClose(t *testing.T) {
	t.Parallel()
	var b Broker = NewMemory()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryStaleCancel: a cancel belongs to its own subscription. When a
// node subscribes again under the same id (a restart within the process),
// the old cancel must not remove the new subscription.
func TestMemoryStaleCancel(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	_, oldCancel := subscribe(t, b, "a")
	r, _ := subscribe(t, b, "a")
	oldCancel()
	if err := b.Publish(context.Background(), Message{Op: OpSend, Origin: "x"}); err != nil {
		t.Fatal(err)
	}
	if len(r.got()) != 1 {
		t.Fatal("the stale cancel removed the new subscription")
	}
}
