package wsconn

import (
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// TestBlockingFlushLeavesNoDeadline: a flush that went the blocking way
// (under a write deadline) must not leave the deadline on the socket, or a
// non-blocking flush after it expires fails and the connection is dropped.
// (Found by the idle benchmark: connections whose first heartbeat ping
// took the blocking path were dropped at the next one.)
func TestBlockingFlushLeavesNoDeadline(t *testing.T) {
	t.Parallel()
	w, r := tcptest.Pair(t)
	go func() { _, _ = io.Copy(io.Discard, r) }()
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var q Queue
	var fl Flusher
	push := func() {
		f := NewFrame(ws.OpPing, nil)
		defer f.Release()
		if _, err := q.PushControl(f); err != nil {
			t.Fatal(err)
		}
	}
	push()
	if _, _, err := fl.Flush(&q, w, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(40 * time.Millisecond) // past the deadline Flush used
	push()
	if _, _, blocked, err := fl.TryFlush(&q, rc); err != nil || blocked {
		t.Fatalf("TryFlush after a blocking flush: blocked=%v err=%v", blocked, err)
	}
}
