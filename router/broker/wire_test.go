package broker

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestWireRoundTrip(t *testing.T) {
	cases := []Message{
		{Op: OpBroadcast, Origin: "n1", Room: "lobby", Except: "n1.7", Data: []byte("hello")},
		{Op: OpBroadcast, Origin: "n1", Room: "", Binary: true, Data: []byte{0, 1, 2, 255}},
		{Op: OpSend, Origin: "n2", Target: "n3.9", To: "n3", Data: nil},
		{Op: OpClose, Origin: "n2", Target: "n3.9", To: "n3", Code: 4001, Reason: "kicked ✓"},
		{Op: OpBroadcast, Origin: "n1", Room: "chat", Offset: 1 << 40, Epoch: "e1", Data: []byte("x")},
	}
	for _, want := range cases {
		b := AppendWire([]byte("prefix"), &want)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatal("AppendWire did not append")
		}
		got, err := DecodeWire(b[len("prefix"):])
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got.Op != want.Op || got.Origin != want.Origin || got.Room != want.Room || got.Target != want.Target ||
			got.Except != want.Except || got.To != want.To || got.Binary != want.Binary || got.Code != want.Code ||
			got.Reason != want.Reason || got.Offset != want.Offset || got.Epoch != want.Epoch || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
	}
}

func TestWireRefusesMalformed(t *testing.T) {
	good := AppendWire(nil, &Message{Op: OpSend, Origin: "a", Target: "b.1", To: "b", Data: []byte("x")})
	bad := map[string][]byte{
		"empty":         nil,
		"short":         {wireVersion, byte(OpSend)},
		"version":       append([]byte{2}, good[1:]...),
		"op 0":          append([]byte{wireVersion, 0}, good[2:]...),
		"op 9":          append([]byte{wireVersion, 9}, good[2:]...),
		"code":          {wireVersion, byte(OpClose), 0, 0x88, 0x27}, // 5000
		"cut in fields": good[:6],
		"huge length":   {wireVersion, byte(OpSend), 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"no offset":     {wireVersion, byte(OpSend), 0, 0},
	}
	for name, b := range bad {
		if _, err := DecodeWire(b); !errors.Is(err, ErrWire) {
			t.Errorf("%s: got %v, want ErrWire", name, err)
		}
	}
}

func FuzzDecodeWire(f *testing.F) {
	f.Add(AppendWire(nil, &Message{Op: OpBroadcast, Origin: "n", Room: "r", Data: []byte("d")}))
	f.Add([]byte{1, 3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeWire(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes (flags other than
		// binary aside).
		again := AppendWire(nil, &m)
		if len(again) > len(b) {
			t.Fatalf("re-encoding grew: %d > %d", len(again), len(b))
		}
	})
}

func TestOutboxOrderBatchesAndDrops(t *testing.T) {
	release := make(chan struct{})
	got := make(chan []Message, 100)
	o := NewOutbox(4, 3, func(b []Message) error {
		<-release
		got <- append([]Message(nil), b...)
		return nil
	})
	// The first message is taken by the goroutine and held in send; four
	// more fill the queue; the rest are dropped without blocking.
	o.Push(Message{Code: 0})
	deadline := time.Now().Add(10 * time.Second)
	for o.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("outbox goroutine did not take the first message")
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i <= 10; i++ {
		ok := o.Push(Message{Code: i})
		if ok != (i <= 4) {
			t.Fatalf("push %d: ok=%v with a queue of 4", i, ok)
		}
	}
	if o.Dropped() != 6 || o.Len() != 4 {
		t.Fatalf("dropped %d queued %d, want 6 and 4", o.Dropped(), o.Len())
	}
	close(release)
	var codes []int
	var batches int
	for len(codes) < 5 {
		select {
		case b := <-got:
			batches++
			if len(b) > 3 {
				t.Fatalf("batch of %d, max 3", len(b))
			}
			for _, m := range b {
				codes = append(codes, m.Code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %v", codes)
		}
	}
	for i, c := range codes {
		if c != i {
			t.Fatalf("order: %v", codes)
		}
	}
	if batches > 3 {
		t.Fatalf("%d batches for 5 messages with max 3: not batching", batches)
	}
	o.Close(time.Second)
}

func TestOutboxCloseDrains(t *testing.T) {
	var n int
	o := NewOutbox(100, 7, func(b []Message) error { n += len(b); return nil })
	for range 50 {
		o.Push(Message{})
	}
	o.Close(10 * time.Second)
	if n != 50 {
		t.Fatalf("sent %d of 50 at close", n)
	}
}

func TestInterestDiff(t *testing.T) {
	i := NewInterest()
	i.Add("a")
	i.Add("b")
	i.Remove("a")
	i.Add("c")
	select {
	case <-i.Changed():
	default:
		t.Fatal("no change signalled")
	}
	if !i.Has("b") || i.Has("a") || i.Len() != 2 {
		t.Fatal("wanted set wrong")
	}
	add, remove := i.Diff(map[string]struct{}{"a": {}, "b": {}})
	if len(add) != 1 || add[0] != "c" || len(remove) != 1 || remove[0] != "a" {
		t.Fatalf("diff: add %v remove %v", add, remove)
	}
}

func TestStamp(t *testing.T) {
	p := Position{Offset: 42, Epoch: "e1"}
	for in, want := range map[string]string{
		`{"a":1}`:          `{"offset":42,"epoch":"e1","a":1}`,
		`{}`:               `{"offset":42,"epoch":"e1"}`,
		`{ }`:              `{"offset":42,"epoch":"e1"}`,
		`{"t":"{offset}"}`: `{"offset":42,"epoch":"e1","t":"{offset}"}`,
		`[1]`:              `[1]`,
		`x`:                `x`,
		``:                 ``,
	} {
		if got := string(Stamp([]byte(in), p)); got != want {
			t.Errorf("Stamp(%s) = %s, want %s", in, got, want)
		}
	}
}
