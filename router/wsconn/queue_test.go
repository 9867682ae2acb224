package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// sized returns a binary frame whose encoding is exactly n bytes (2 <= n <= 127).
func sized(n int) *Frame {
	return NewFrame(ws.OpBinary, make([]byte, n-2))
}

// seqFrame is a binary frame carrying producer and sequence numbers.
func seqFrame(producer, seq int) *Frame {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], uint32(producer))
	binary.BigEndian.PutUint32(b[4:], uint32(seq))
	return NewFrame(ws.OpBinary, b[:])
}

func refs(f *Frame) int32 { return atomic.LoadInt32(&f.refs) }

func wantRefs(t *testing.T, what string, want int32, frames ...*Frame) {
	t.Helper()
	for i, f := range frames {
		if got := refs(f); got != want {
			t.Fatalf("%s: frame %d has %d references, want %d", what, i, got, want)
		}
	}
}

func releaseAll(frames ...*Frame) {
	for _, f := range frames {
		f.Release()
	}
}

// readFrames reads n frames from r (with a safety deadline).
func readFrames(t *testing.T, r net.Conn, n int) []ws.Frame {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(r)
	out := make([]ws.Frame, 0, n)
	for range n {
		f, err := readServerFrame(br)
		if err != nil {
			t.Fatalf("reading frame %d of %d: %v", len(out), n, err)
		}
		out = append(out, f)
	}
	return out
}

// drainTake plays the flusher without I/O: it takes batches until the queue
// reports done, releasing what it took, and returns how many frames it got.
func drainTake(q *Queue) (frames int, sealed bool) {
	var batch []*Frame
	for {
		var done bool
		batch, sealed, done = q.take(batch[:0])
		if done {
			return frames, sealed
		}
		frames += len(batch)
		releaseAll(batch...)
	}
}

func TestQueuePushStartEdge(t *testing.T) {
	t.Parallel()
	var q Queue
	f1, f2, f3, c := sized(10), sized(20), sized(30), NewFrame(ws.OpPong, nil)
	defer releaseAll(f1, f2, f3, c)

	steps := []struct {
		name  string
		push  func() (bool, error)
		start bool
	}{
		{"first push", func() (bool, error) { return q.Push(f1) }, true},
		{"second push", func() (bool, error) { return q.Push(f2) }, false},
		{"control push", func() (bool, error) { return q.PushControl(c) }, false},
	}
	for _, s := range steps {
		start, err := s.push()
		if err != nil || start != s.start {
			t.Fatalf("%s: start=%v err=%v, want start=%v", s.name, start, err, s.start)
		}
	}
	if got := q.Buffered(); got != 10+20+2 {
		t.Fatalf("Buffered = %d", got)
	}
	wantRefs(t, "queued", 2, f1, f2, c)

	// The flusher takes the batch but still owns the write side: a push
	// now must not start a second flusher.
	batch, sealed, done := q.take(nil)
	if done || sealed || len(batch) != 3 || batch[0] != f1 || batch[1] != f2 || batch[2] != c {
		t.Fatalf("take: %d frames, sealed=%v done=%v", len(batch), sealed, done)
	}
	if q.Buffered() != 0 {
		t.Fatalf("Buffered after take = %d", q.Buffered())
	}
	releaseAll(batch...)
	if start, err := q.Push(f3); start || err != nil {
		t.Fatalf("push while flushing: start=%v err=%v", start, err)
	}
	if n, _ := drainTake(&q); n != 1 {
		t.Fatalf("second batch has %d frames", n)
	}
	// Idle again: the next push is an edge.
	if start, err := q.Push(f1); !start || err != nil {
		t.Fatalf("push after drain: start=%v err=%v", start, err)
	}
	if start, err := q.PushControl(c); start || err != nil {
		t.Fatalf("control push: start=%v err=%v", start, err)
	}
	drainTake(&q)
	// PushControl is an edge too when it finds the queue idle.
	if start, err := q.PushControl(c); !start || err != nil {
		t.Fatalf("control push on idle queue: start=%v err=%v", start, err)
	}
	drainTake(&q)
	wantRefs(t, "drained", 1, f1, f2, f3, c)
}

func TestQueueLimit(t *testing.T) {
	t.Parallel()
	type push struct {
		size    int
		control bool
		err     error
	}
	for _, tc := range []struct {
		name   string
		limit  int
		pushes []push
	}{
		{"fills exactly", 100, []push{{60, false, nil}, {40, false, nil}, {2, false, ErrFull}}},
		{"refuses then fits", 100, []push{{60, false, nil}, {50, false, ErrFull}, {40, false, nil}, {3, false, ErrFull}}},
		{"oversize into empty queue", 100, []push{{127, false, nil}, {2, false, ErrFull}}},
		{"oversize into non-empty queue", 100, []push{{2, false, nil}, {127, false, ErrFull}}},
		{"control ignores the limit", 100, []push{{90, false, nil}, {20, false, ErrFull}, {50, true, nil}, {60, true, nil}, {2, false, ErrFull}}},
		{"no limit", 0, []push{{127, false, nil}, {127, false, nil}, {127, false, nil}, {127, true, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := Queue{Limit: tc.limit}
			want := 0
			var frames []*Frame
			for i, p := range tc.pushes {
				f := sized(p.size)
				frames = append(frames, f)
				var err error
				if p.control {
					_, err = q.PushControl(f)
				} else {
					_, err = q.Push(f)
				}
				if !errors.Is(err, p.err) || (p.err == nil) != (err == nil) {
					t.Fatalf("push %d (%d bytes): err %v, want %v", i, p.size, err, p.err)
				}
				wantRef := int32(1)
				if err == nil {
					want += p.size
					wantRef = 2
				}
				wantRefs(t, "after push", wantRef, f)
				if got := q.Buffered(); got != want {
					t.Fatalf("push %d: Buffered = %d, want %d", i, got, want)
				}
			}
			// Once drained, the budget is whole again.
			drainTake(&q)
			if q.Buffered() != 0 {
				t.Fatalf("Buffered after drain = %d", q.Buffered())
			}
			if tc.limit > 0 {
				f := sized(tc.limit)
				frames = append(frames, f)
				if _, err := q.Push(f); err != nil {
					t.Fatalf("push of a full budget after drain: %v", err)
				}
				drainTake(&q)
			}
			wantRefs(t, "drained", 1, frames...)
			releaseAll(frames...)
		})
	}
}

func TestQueueSealAndKill(t *testing.T) {
	t.Parallel()
	t.Run("seal keeps backlog, close last", func(t *testing.T) {
		t.Parallel()
		var q Queue
		d1, d2, c, c2, late := sized(10), sized(20), NewCloseFrame(1000, "bye"), NewCloseFrame(1001, ""), sized(5)
		defer releaseAll(d1, d2, c, c2, late)
		q.Push(d1)
		q.Push(d2)
		start, ok := q.Seal(c, false, false)
		if start || !ok || !q.Sealed() {
			t.Fatalf("Seal: start=%v ok=%v sealed=%v", start, ok, q.Sealed())
		}
		if _, err := q.Push(late); !errors.Is(err, ErrClosed) {
			t.Fatalf("Push after Seal: %v", err)
		}
		if _, err := q.PushControl(late); !errors.Is(err, ErrClosed) {
			t.Fatalf("PushControl after Seal: %v", err)
		}
		if start, ok := q.Seal(c2, false, false); start || ok {
			t.Fatalf("second Seal: start=%v ok=%v", start, ok)
		}
		wantRefs(t, "refused", 1, late, c2)
		wantRefs(t, "queued", 2, d1, d2, c)

		w, r := tcptest.Pair(t)
		var fl Flusher
		sealed, written, err := fl.Flush(&q, w, time.Second)
		if err != nil || !sealed || written != int64(10+20+len(c.Bytes())) {
			t.Fatalf("Flush: sealed=%v written=%d err=%v", sealed, written, err)
		}
		got := readFrames(t, r, 3)
		if got[0].Header.Length != 8 || got[1].Header.Length != 18 || got[2].Header.OpCode != ws.OpClose {
			t.Fatalf("frames out of order: %+v %+v %+v", got[0].Header, got[1].Header, got[2].Header)
		}
		if code, reason := ws.ParseCloseFrameData(got[2].Payload); code != 1000 || reason != "bye" {
			t.Fatalf("close frame (%d, %q)", code, reason)
		}
		wantRefs(t, "written", 1, d1, d2, c)
	})
	t.Run("seal with discard", func(t *testing.T) {
		t.Parallel()
		q := Queue{Limit: 30}
		d1, d2, c := sized(10), sized(20), NewCloseFrame(1008, "slow")
		defer releaseAll(d1, d2, c)
		q.Push(d1)
		q.Push(d2)
		// The limit does not apply to the close frame.
		if start, ok := q.Seal(c, true, false); start || !ok {
			t.Fatalf("Seal: start=%v ok=%v", start, ok)
		}
		wantRefs(t, "discarded", 1, d1, d2)
		if got := q.Buffered(); got != len(c.Bytes()) {
			t.Fatalf("Buffered = %d, want the close frame only", got)
		}
		w, r := tcptest.Pair(t)
		var fl Flusher
		sealed, written, err := fl.Flush(&q, w, time.Second)
		if err != nil || !sealed || written != int64(len(c.Bytes())) {
			t.Fatalf("Flush: sealed=%v written=%d err=%v", sealed, written, err)
		}
		if got := readFrames(t, r, 1); got[0].Header.OpCode != ws.OpClose {
			t.Fatalf("first frame is %v", got[0].Header.OpCode)
		}
		wantRefs(t, "written", 1, c)
	})
	t.Run("seal on idle queue starts a flusher", func(t *testing.T) {
		t.Parallel()
		var q Queue
		c := NewCloseFrame(1000, "")
		defer c.Release()
		if start, ok := q.Seal(c, true, false); !start || !ok {
			t.Fatalf("Seal: start=%v ok=%v", start, ok)
		}
		if n, sealed := drainTake(&q); n != 1 || !sealed {
			t.Fatalf("took %d frames, sealed=%v", n, sealed)
		}
	})
	t.Run("kill", func(t *testing.T) {
		t.Parallel()
		var q Queue
		d1, d2, c := sized(10), sized(20), NewCloseFrame(1000, "")
		defer releaseAll(d1, d2, c)
		if start, _ := q.Push(d1); !start {
			t.Fatal("no start edge")
		}
		q.PushControl(d2)
		q.Kill()
		wantRefs(t, "killed", 1, d1, d2)
		if q.Buffered() != 0 {
			t.Fatalf("Buffered after Kill = %d", q.Buffered())
		}
		if _, err := q.Push(d1); !errors.Is(err, ErrClosed) {
			t.Fatalf("Push after Kill: %v", err)
		}
		if _, err := q.PushControl(d1); !errors.Is(err, ErrClosed) {
			t.Fatalf("PushControl after Kill: %v", err)
		}
		if _, ok := q.Seal(c, false, false); ok {
			t.Fatal("Seal after Kill succeeded")
		}
		q.Kill() // idempotent
		// The flusher started by the first Push finds nothing to write.
		w, _ := tcptest.Pair(t)
		var fl Flusher
		sealed, written, err := fl.Flush(&q, w, time.Second)
		if sealed || written != 0 || err != nil {
			t.Fatalf("Flush after Kill: sealed=%v written=%d err=%v", sealed, written, err)
		}
		wantRefs(t, "end", 1, d1, d2, c)
	})
}

// TestFlushConcurrentProducers: producers push while flushers run, as the
// router does (a flusher per start edge); the peer must read every frame,
// each producer's in order, then the close frame.
func TestFlushConcurrentProducers(t *testing.T) {
	t.Parallel()
	const producers, perProducer = 4, 300
	w, r := tcptest.Pair(t)
	var q Queue

	var (
		flushers sync.WaitGroup
		mu       sync.Mutex
		written  int64
		sealedN  int
		flushErr error
	)
	run := func() {
		flushers.Add(1)
		go func() {
			defer flushers.Done()
			var fl Flusher
			sealed, n, err := fl.Flush(&q, w, 5*time.Second)
			fl.Reset()
			mu.Lock()
			written += n
			if sealed {
				sealedN++
			}
			if err != nil {
				flushErr = err
			}
			mu.Unlock()
		}()
	}

	var total int64
	var totalMu sync.Mutex
	var prod sync.WaitGroup
	for p := range producers {
		prod.Add(1)
		go func() {
			defer prod.Done()
			for i := range perProducer {
				f := seqFrame(p, i)
				totalMu.Lock()
				total += int64(len(f.Bytes()))
				totalMu.Unlock()
				var start bool
				var err error
				if i%10 == 0 {
					start, err = q.PushControl(f)
				} else {
					start, err = q.Push(f)
				}
				if err != nil {
					t.Errorf("push: %v", err)
				}
				if start {
					run()
				}
				f.Release()
			}
		}()
	}

	type result struct {
		frames []ws.Frame
	}
	readDone := make(chan result, 1)
	go func() {
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(r)
		var frames []ws.Frame
		for {
			f, err := readServerFrame(br)
			if err != nil {
				t.Errorf("read after %d frames: %v", len(frames), err)
				break
			}
			frames = append(frames, f)
			if f.Header.OpCode == ws.OpClose {
				break
			}
		}
		readDone <- result{frames}
	}()

	prod.Wait()
	c := NewCloseFrame(1000, "done")
	total += int64(len(c.Bytes()))
	if start, ok := q.Seal(c, false, false); !ok {
		t.Fatal("Seal failed")
	} else if start {
		run()
	}
	c.Release()

	var res result
	select {
	case res = <-readDone:
	case <-time.After(30 * time.Second):
		t.Fatal("reader did not finish")
	}
	flushers.Wait()
	if flushErr != nil {
		t.Fatalf("flush: %v", flushErr)
	}
	if written != total {
		t.Fatalf("flushers wrote %d bytes, frames total %d", written, total)
	}
	if sealedN == 0 {
		t.Fatal("no flusher reported the close frame")
	}
	if len(res.frames) != producers*perProducer+1 {
		t.Fatalf("read %d frames, want %d", len(res.frames), producers*perProducer+1)
	}
	next := make([]int, producers)
	for _, f := range res.frames[:len(res.frames)-1] {
		if f.Header.OpCode != ws.OpBinary || len(f.Payload) != 8 {
			t.Fatalf("unexpected frame %+v", f.Header)
		}
		p := int(binary.BigEndian.Uint32(f.Payload[:4]))
		s := int(binary.BigEndian.Uint32(f.Payload[4:]))
		if p >= producers || s != next[p] {
			t.Fatalf("producer %d: got seq %d, want %d", p, s, next[p])
		}
		next[p]++
	}
}

// setSmallBuffers shrinks both socket buffers so that a peer that does not
// read blocks the writer after a few kilobytes.
func setSmallBuffers(t *testing.T, w, r *net.TCPConn) {
	t.Helper()
	if err := w.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := r.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
}

func TestFlushTimeoutKillsQueue(t *testing.T) {
	t.Parallel()
	w, r := tcptest.Pair(t)
	setSmallBuffers(t, w, r)
	var q Queue
	var frames []*Frame
	total := 0
	for range 4 {
		f := NewFrame(ws.OpBinary, make([]byte, 1<<20))
		frames = append(frames, f)
		total += len(f.Bytes())
		q.Push(f)
	}
	defer releaseAll(frames...)

	const timeout = 100 * time.Millisecond
	type res struct {
		sealed  bool
		written int64
		err     error
		took    time.Duration
	}
	done := make(chan res, 1)
	go func() {
		var fl Flusher
		t0 := time.Now()
		sealed, n, err := fl.Flush(&q, w, timeout)
		done <- res{sealed, n, err, time.Since(t0)}
	}()
	var got res
	select {
	case got = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Flush to a peer that does not read did not time out")
	}
	if !errors.Is(got.err, os.ErrDeadlineExceeded) {
		t.Fatalf("Flush error %v, want a deadline error", got.err)
	}
	if got.took < timeout {
		t.Fatalf("Flush gave up after %v, before its %v timeout", got.took, timeout)
	}
	t.Logf("wrote %d of %d bytes before the %v deadline", got.written, total, timeout)
	if got.sealed || got.written >= int64(total) {
		t.Fatalf("sealed=%v written=%d of %d", got.sealed, got.written, total)
	}
	// The queue is dead: nothing more goes in and nothing is held.
	wantRefs(t, "after failed flush", 1, frames...)
	f := sized(10)
	defer f.Release()
	if _, err := q.Push(f); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after failed flush: %v", err)
	}
	if _, ok := q.Seal(f, true, false); ok {
		t.Fatal("Seal after failed flush succeeded")
	}
	wantRefs(t, "refused", 1, f)
	q.mu.Lock()
	flushing := q.flushing
	q.mu.Unlock()
	if flushing {
		t.Fatal("queue still marked as flushing after the flusher returned")
	}
}

func TestFlushClosedConn(t *testing.T) {
	t.Parallel()
	w, _ := tcptest.Pair(t)
	w.Close()
	var q Queue
	f := sized(50)
	defer f.Release()
	q.Push(f)
	var fl Flusher
	_, written, err := fl.Flush(&q, w, time.Second)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Flush on a closed conn: %v", err)
	}
	if written != 0 {
		t.Fatalf("written = %d", written)
	}
	wantRefs(t, "after error", 1, f)
	if _, err := q.Push(f); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after error: %v", err)
	}
}

// TestFlushBroadcastRefs: one frame queued on several connections is
// released once per queue, and the caller's reference survives.
func TestFlushBroadcastRefs(t *testing.T) {
	t.Parallel()
	const conns = 3
	f := NewFrameString(ws.OpText, "broadcast")
	defer f.Release()
	qs := make([]Queue, conns)
	for i := range qs {
		if start, err := qs[i].Push(f); !start || err != nil {
			t.Fatalf("push %d: %v %v", i, start, err)
		}
	}
	wantRefs(t, "queued", 1+conns, f)
	for i := range qs {
		w, r := tcptest.Pair(t)
		var fl Flusher
		if _, _, err := fl.Flush(&qs[i], w, time.Second); err != nil {
			t.Fatal(err)
		}
		if got := readFrames(t, r, 1); string(got[0].Payload) != "broadcast" {
			t.Fatalf("conn %d read %q", i, got[0].Payload)
		}
		wantRefs(t, "after flush", int32(conns-i), f)
	}
}

// TestFlusherScratch: a burst's scratch space is dropped by Reset and by
// take, small ones are kept and cleared.
func TestFlusherScratch(t *testing.T) {
	t.Parallel()
	w, r := tcptest.Pair(t)
	go io.Copy(io.Discard, r)

	var q Queue
	var fl Flusher
	burst := make([]*Frame, 100)
	for i := range burst {
		burst[i] = sized(10)
		q.Push(burst[i])
	}
	q.mu.Lock()
	grown := cap(q.frames) > 64
	q.mu.Unlock()
	if !grown {
		t.Fatal("test setup: the burst did not grow the queue")
	}
	if _, n, err := fl.Flush(&q, w, time.Second); err != nil || n != 1000 {
		t.Fatalf("Flush: %d %v", n, err)
	}
	q.mu.Lock()
	kept := q.frames != nil
	q.mu.Unlock()
	if kept {
		t.Fatal("the queue kept its burst-sized slice")
	}
	wantRefs(t, "burst written", 1, burst...)
	releaseAll(burst...)
	fl.Reset()
	if fl.batch != nil || fl.bufs != nil {
		t.Fatal("Reset kept burst-sized scratch space")
	}

	small := []*Frame{sized(10), sized(20)}
	defer releaseAll(small...)
	for _, f := range small {
		q.Push(f)
	}
	if _, n, err := fl.Flush(&q, w, time.Second); err != nil || n != 30 {
		t.Fatalf("Flush: %d %v", n, err)
	}
	fl.Reset()
	if cap(fl.bufs) == 0 || len(fl.bufs) != 0 {
		t.Fatalf("Reset: bufs len %d cap %d", len(fl.bufs), cap(fl.bufs))
	}
	for i, b := range fl.bufs[:cap(fl.bufs)] {
		if b != nil {
			t.Fatalf("Reset left buffer %d referenced", i)
		}
	}
	for i, f := range fl.batch[:cap(fl.batch)] {
		if f != nil {
			t.Fatalf("Flush left frame %d referenced in its batch", i)
		}
	}
}

// TestControlFramesCoalesce: past maxQueuedControl pongs waiting in the
// queue, a new one replaces the latest, in place, so a peer that floods
// pings and reads nothing holds a few pongs, not one per ping; a frame
// already taken by the flusher is not touched, and data frames never
// coalesce.
func TestControlFramesCoalesce(t *testing.T) {
	t.Parallel()
	var q Queue
	data := sized(10)
	if start, err := q.Push(data); err != nil || !start {
		t.Fatalf("push data: start %v, err %v", start, err)
	}
	var pongs []*Frame
	for i := range 10000 {
		f := NewFrame(ws.OpPong, []byte{byte(i), byte(i >> 8)})
		pongs = append(pongs, f)
		if start, err := q.PushControl(f); err != nil || start {
			t.Fatalf("pong %d: start %v, err %v", i, start, err)
		}
	}
	ping := NewFrame(ws.OpPing, nil)
	if _, err := q.PushControl(ping); err != nil {
		t.Fatal(err)
	}
	kept := maxQueuedControl - 1
	last := pongs[len(pongs)-1]
	wantRefs(t, "the first pongs", 2, pongs[:kept]...)
	wantRefs(t, "replaced pongs", 1, pongs[kept:len(pongs)-1]...)
	wantRefs(t, "latest pong", 2, last)
	want := []*Frame{data}
	want = append(append(want, pongs[:kept]...), last, ping)
	size := 0
	for _, f := range want {
		size += len(f.Bytes())
	}
	if got := q.Buffered(); got != size {
		t.Fatalf("Buffered = %d, want %d (data, %d pongs, one ping)", got, size, maxQueuedControl)
	}

	batch, _, done := q.take(nil)
	if done || !slices.Equal(batch, want) {
		t.Fatalf("took %d frames (done %v), want data, the first pongs, the latest pong, the ping", len(batch), done)
	}
	// Taken frames belong to the flusher: new pongs queue anew.
	next := NewFrame(ws.OpPong, []byte("n"))
	if _, err := q.PushControl(next); err != nil {
		t.Fatal(err)
	}
	if got := q.Buffered(); got != len(next.Bytes()) {
		t.Fatalf("Buffered after take = %d, want the new pong's %d", got, len(next.Bytes()))
	}
	wantRefs(t, "taken pong", 2, last)
	releaseAll(batch...)
	drainTake(&q)
	wantRefs(t, "drained", 1, append(pongs, data, ping, next)...)
	releaseAll(append(pongs, data, ping, next)...)
}

// TestTryFlushWritesEveryByteOnce: TryFlush on a real socket whose reader
// has stalled, with batches of one frame (sendto: raw when small) and of
// several (writev), until the socket is full (blocked, the rest kept),
// then Flush finishing once the reader drains: the peer reads exactly the
// frames pushed, in order, each byte once, across partial writes.
func TestTryFlushWritesEveryByteOnce(t *testing.T) {
	t.Parallel()
	w, r := tcptest.Pair(t)
	if err := w.SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		q    Queue
		fl   Flusher
		want bytes.Buffer
		seq  byte
	)
	push := func(n int) {
		p := make([]byte, n)
		for i := range p {
			p[i] = seq + byte(i)
		}
		seq++
		f := NewFrame(ws.OpBinary, p)
		want.Write(f.Bytes())
		if _, err := q.Push(f); err != nil {
			t.Fatal(err)
		}
		f.Release()
	}
	blocked := false
	for round := 0; !blocked; round++ {
		if round == 100000 {
			t.Fatal("the socket never filled up")
		}
		// One small frame (a raw sendto), several (writev), or one
		// past the raw limit (a plain sendto).
		switch {
		case round%5 == 4:
			push(RawMax + 1000)
		default:
			for k := range 1 + round%3 {
				push(20 + (round*31+k*17)%900)
			}
		}
		var err error
		_, _, blocked, err = fl.TryFlush(&q, rc)
		if err != nil {
			t.Fatal(err)
		}
	}
	push(100) // queued behind what the blocked flusher holds
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	if _, _, err := fl.Flush(&q, w, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	b := <-got
	if !bytes.Equal(b, want.Bytes()) {
		i := 0
		for i < len(b) && i < want.Len() && b[i] == want.Bytes()[i] {
			i++
		}
		t.Fatalf("the peer read %d bytes, want %d; first difference at byte %d", len(b), want.Len(), i)
	}
}
