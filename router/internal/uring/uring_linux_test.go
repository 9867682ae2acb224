//go:build linux

package uring

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// pair returns a connected stream socket pair: the sending end's
// descriptor and the receiving end as a file.
func pair(t *testing.T) (int, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fds[0]) })
	rf := os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() { _ = rf.Close() })
	return fds[0], rf
}

var submits atomic.Int64

// results submits what r holds, as a raw system call every other time
// (Submit's two ways must not differ in what they do).
func results(t *testing.T, r *Ring) map[uint64]int32 {
	t.Helper()
	got := map[uint64]int32{}
	raw := submits.Add(1)%2 == 0
	if err := r.Submit(raw, func(user uint64, res int32) { got[user] = res }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestSendsToSeveralSockets: one Submit carries sends and a sendmsg of
// several buffers to different sockets; each peer reads exactly its
// bytes, and each send's result is its length.
func TestSendsToSeveralSockets(t *testing.T) {
	t.Parallel()
	r := newRing(t, 8)
	a, ra := pair(t)
	b, rb := pair(t)
	one, two := []byte("hello, "), []byte("world")
	if err := r.PrepSend(a, []byte("first"), false, 1); err != nil {
		t.Fatal(err)
	}
	iov := []unix.Iovec{{Base: &one[0]}, {Base: &two[0]}}
	iov[0].SetLen(len(one))
	iov[1].SetLen(len(two))
	msg := &unix.Msghdr{Iov: &iov[0]}
	msg.SetIovlen(len(iov))
	if err := r.PrepSendmsg(b, msg, false, 2); err != nil {
		t.Fatal(err)
	}
	got := results(t, r)
	if got[1] != 5 || got[2] != 12 || len(got) != 2 {
		t.Fatalf("results %v, want 1:5 2:12", got)
	}
	for _, c := range []struct {
		f    *os.File
		want string
	}{{ra, "first"}, {rb, "hello, world"}} {
		buf := make([]byte, len(c.want))
		if _, err := io.ReadFull(c.f, buf); err != nil || string(buf) != c.want {
			t.Fatalf("read %q, %v; want %q", buf, err, c.want)
		}
	}
	// The ring is reusable: a second batch on the same entries.
	if err := r.PrepSend(a, []byte("again"), false, 3); err != nil {
		t.Fatal(err)
	}
	if got := results(t, r); got[3] != 5 {
		t.Fatalf("second batch: %v", got)
	}
}

// TestFullSocketAnswersEAGAIN: a send to a socket whose buffer is full
// does not wait: it completes with EAGAIN, or with the part that fit.
func TestFullSocketAnswersEAGAIN(t *testing.T) {
	t.Parallel()
	r := newRing(t, 4)
	a, _ := pair(t)
	if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	partial := false
	for i := range 100 {
		if err := r.PrepSend(a, chunk, false, uint64(i)); err != nil {
			t.Fatal(err)
		}
		res := results(t, r)[uint64(i)]
		switch {
		case res == -int32(unix.EAGAIN):
			return
		case res < 0:
			t.Fatalf("send %d: %v, want EAGAIN", i, unix.Errno(-res))
		case int(res) < len(chunk):
			partial = true
		}
	}
	t.Fatalf("100 sends of 64 KiB to a peer that never reads never met EAGAIN (partial %v)", partial)
}

// TestBadDescriptor: a send to a descriptor that is not open completes
// with EBADF; the other sends of the batch are made.
func TestBadDescriptor(t *testing.T) {
	t.Parallel()
	r := newRing(t, 4)
	a, ra := pair(t)
	// Past any descriptor table: a descriptor just closed could be
	// reopened by a parallel test before the send.
	const notOpen = 1 << 30
	if err := r.PrepSend(notOpen, []byte("lost"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.PrepSend(a, []byte("kept"), false, 2); err != nil {
		t.Fatal(err)
	}
	got := results(t, r)
	if got[1] != -int32(unix.EBADF) || got[2] != 4 {
		t.Fatalf("results %v, want 1:-EBADF 2:4", got)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(ra, buf); err != nil || string(buf) != "kept" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// TestRingHoldsItsEntries: a ring takes as many sends as it has entries
// and refuses the next until Submit.
func TestRingHoldsItsEntries(t *testing.T) {
	t.Parallel()
	r := newRing(t, 4)
	a, _ := pair(t)
	for i := range r.Entries() {
		if err := r.PrepSend(a, []byte("x"), false, uint64(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := r.PrepSend(a, []byte("x"), false, 99); !errors.Is(err, ErrFull) {
		t.Fatalf("send past the entries: %v, want ErrFull", err)
	}
	if got := results(t, r); len(got) != r.Entries() {
		t.Fatalf("%d results, want %d", len(got), r.Entries())
	}
	if err := r.PrepSend(a, []byte("x"), false, 99); err != nil {
		t.Fatalf("after Submit: %v", err)
	}
	results(t, r)
}
