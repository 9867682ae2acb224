package wsconn

import (
	"bytes"
	"io"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/tcptest"
	"github.com/moonwire/moonwire/router/internal/uring"
)

// TestLastWriteWaitsForTheFIN: the write of a close frame sealed as the
// last (Seal's last: the answer to the peer's close) stays in the socket
// until the close, which sends it with the FIN; every other write goes
// out at once. Each way a flusher writes: a sendto (one frame), a sendmsg
// (several), and a ring's send and sendmsg. The peer gets every byte,
// then the end of the stream.
func TestLastWriteWaitsForTheFIN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		frames int // data frames ahead of the close frame
		ring   bool
	}{
		{"sendto", 0, false},
		{"sendmsg", 2, false},
		{"ring send", 0, true},
		{"ring sendmsg", 2, true},
	} {
		for _, last := range []bool{true, false} {
			name := tc.name
			if !last {
				name += " not last"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w, r := tcptest.Pair(t)
				rc, err := w.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var q Queue
				var want bytes.Buffer
				for i := range tc.frames {
					f := NewFrame(ws.OpText, []byte{'a' + byte(i)})
					want.Write(f.Bytes())
					if _, err := q.Push(f); err != nil {
						t.Fatal(err)
					}
					f.Release()
				}
				cf := NewCloseFrame(ws.StatusNormalClosure, "")
				want.Write(cf.Bytes())
				if _, ok := q.Seal(cf, false, last); !ok {
					t.Fatal("seal refused")
				}
				cf.Release()

				var fl Flusher
				if tc.ring {
					writeOnRing(t, &fl, &q, rc)
				} else {
					sealed, n, blocked, err := fl.TryFlush(&q, rc)
					if err != nil || blocked || !sealed || int(n) != want.Len() {
						t.Fatalf("TryFlush: sealed %v, %d of %d bytes, blocked %v, err %v", sealed, n, want.Len(), blocked, err)
					}
				}

				held := int(tcptest.Info(t, w).Notsent_bytes)
				switch {
				case last && held != want.Len():
					t.Errorf("%d bytes held back after the last write, want all %d", held, want.Len())
				case !last && held != 0:
					t.Errorf("%d bytes held back after a write that is not the last", held)
				}
				_ = w.Close()
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, want.Bytes()) {
					t.Fatalf("peer read %x (%v), want %x then the end", got, err, want.Bytes())
				}
			})
		}
	}
}

// writeOnRing makes fl's write of q as a flush worker makes it: one send
// on a ring.
func writeOnRing(t *testing.T, fl *Flusher, q *Queue, rc interface {
	Control(func(uintptr)) error
}) {
	t.Helper()
	ring, err := uring.New(4)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	defer ring.Close()
	sealed, done := fl.Prepare(q)
	if done || !sealed {
		t.Fatalf("Prepare: sealed %v, done %v", sealed, done)
	}
	res := int32(-1 << 30)
	if err := rc.Control(func(fd uintptr) {
		if err := fl.QueueOn(ring, int(fd), 0); err != nil {
			t.Error(err)
			return
		}
		if err := ring.Submit(false, func(_ uint64, r int32) { res = r }); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if res < 0 {
		t.Fatalf("ring send: %d", res)
	}
	if blocked, err := fl.Wrote(q, int(res), nil); blocked || err != nil {
		t.Fatalf("Wrote: blocked %v, err %v", blocked, err)
	}
	if _, done := fl.Prepare(q); !done {
		t.Fatal("the queue is not drained")
	}
}
