//go:build linux

package poll

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// wait bounds every wait for an event: generous, since a loaded CI machine
// can stall a goroutine for a long time, and never reached when all is well.
const wait = 10 * time.Second

func rawConn(t *testing.T, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// harness is a running Poller whose reports arrive on a channel.
type harness struct {
	t       *testing.T
	p       *Poller
	reports chan uint64
	hangups chan uint64 // the reports flagged hangup, also in reports
	runErr  chan error
}

func startPoller(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, reports: make(chan uint64, 1024), hangups: make(chan uint64, 1024), runErr: make(chan error, 1)}
	p, err := New(func(tok uint64, hangup bool) {
		if hangup {
			select {
			case h.hangups <- tok:
			default:
				panic("poll test: hangup channel full")
			}
		}
		select {
		case h.reports <- tok:
		default:
			panic("poll test: report channel full")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	go func() { h.runErr <- p.Run() }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
		select {
		case <-h.runErr:
		case <-time.After(wait):
			t.Error("Run did not return after Close")
		}
	})
	return h
}

// conn is a registered loopback connection.
type conn struct {
	local, peer *net.TCPConn
	rc          syscall.RawConn
	desc        Desc
	token       uint64
}

func (h *harness) add(token uint64) *conn {
	h.t.Helper()
	peer, local := tcptest.Pair(h.t)
	c := &conn{local: local, peer: peer, rc: rawConn(h.t, local), token: token}
	if err := func() error { c.desc.Init(c.rc, token); return h.p.Add(&c.desc) }(); err != nil {
		h.t.Fatalf("Add(%d): %v", token, err)
	}
	return c
}

func (h *harness) send(c *conn, s string) {
	h.t.Helper()
	if _, err := c.peer.Write([]byte(s)); err != nil {
		h.t.Fatal(err)
	}
}

// expect waits for the next report and checks it is token.
func (h *harness) expect(token uint64) {
	h.t.Helper()
	select {
	case got := <-h.reports:
		if got != token {
			h.t.Fatalf("report for token %#x, want %#x", got, token)
		}
	case <-time.After(wait):
		h.t.Fatalf("no report for token %#x within %v", token, wait)
	}
}

// quiet proves that no report is pending for any token but the sentinel's:
// it waits until c's socket is readable in the kernel (so a report due for
// its data would already be on epoll's ready list), then makes the
// sentinel readable and waits for its report. Reports are delivered in
// ready-list order from one goroutine, so anything else would come first.
func (h *harness) quiet(c *conn, sentinel *conn) {
	h.t.Helper()
	if c != nil {
		waitReadable(h.t, c)
	}
	h.send(sentinel, "s")
	select {
	case got := <-h.reports:
		if got != sentinel.token {
			h.t.Fatalf("unexpected report for token %#x", got)
		}
	case <-time.After(wait):
		h.t.Fatalf("no report for the sentinel within %v", wait)
	}
	readAll(h.t, sentinel)
}

// waitReadable blocks in poll(2) until c has data or a hangup pending.
func waitReadable(t *testing.T, c *conn) {
	t.Helper()
	var perr error
	err := c.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		for {
			n, err := unix.Poll(fds, int(wait/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			if err == nil && n == 0 {
				err = errors.New("not readable in time")
			}
			perr = err
			return
		}
	})
	if err != nil || perr != nil {
		t.Fatalf("waiting for readability: %v %v", err, perr)
	}
}

// readAll consumes whatever c holds without blocking.
func readAll(t *testing.T, c *conn) int {
	t.Helper()
	total := 0
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		var buf [4096]byte
		for {
			n, err := unix.Read(int(fd), buf[:])
			if n > 0 {
				total += n
				continue
			}
			if err != nil && err != unix.EAGAIN {
				rerr = err
			}
			return true // never wait for more
		}
	})
	if err != nil || rerr != nil {
		t.Fatalf("read: %v %v", err, rerr)
	}
	return total
}

func TestAddReportsReadable(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	sentinel := h.add(1)
	c := h.add(2)
	// Nothing to read: nothing reported.
	h.quiet(nil, sentinel)
	h.send(c, "hello")
	h.expect(2)
	if n := readAll(t, c); n != 5 {
		t.Fatalf("read %d bytes", n)
	}
}

func TestAddWithDataAlreadyPending(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	peer, local := tcptest.Pair(t)
	if _, err := peer.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	c := &conn{local: local, peer: peer, rc: rawConn(t, local), token: 9}
	waitReadable(t, c)
	if err := func() error { c.desc.Init(c.rc, 9); return h.p.Add(&c.desc) }(); err != nil {
		t.Fatal(err)
	}
	h.expect(9)
}

// TestEdgeTriggered: data is reported when it arrives, once, whether or
// not earlier data was read; unread data is not reported again.
func TestEdgeTriggered(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	sentinel := h.add(100)
	c := h.add(7)
	h.send(c, "a")
	h.expect(7)
	// Unread, and no new data: silence.
	h.quiet(c, sentinel)
	// New data on top of unread data: one report.
	h.send(c, "b")
	h.expect(7)
	h.quiet(c, sentinel)
	if n := readAll(t, c); n != 2 {
		t.Fatalf("read %d bytes, want 2", n)
	}
	// Drained: silent until new data, then one report, with no epoll_ctl.
	h.quiet(nil, sentinel)
	h.send(c, "c")
	h.expect(7)
	h.quiet(c, sentinel)
}

func TestRemoveStopsReports(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	sentinel := h.add(1)
	c := h.add(2)
	if err := h.p.Remove(&c.desc); err != nil {
		t.Fatal(err)
	}
	h.send(c, "x")
	h.quiet(c, sentinel)
	// A second Remove fails: it is no longer in the set.
	if err := h.p.Remove(&c.desc); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Remove after Remove: %v, want ENOENT", err)
	}
	h.quiet(c, sentinel)
	// Added again, it reports the pending data.
	if err := func() error { c.desc.Init(c.rc, 3); return h.p.Add(&c.desc) }(); err != nil {
		t.Fatal(err)
	}
	h.expect(3)
	// Remove of a Desc that was never added is a no-op.
	var never Desc
	if err := h.p.Remove(&never); err != nil {
		t.Fatalf("Remove of an unused Desc: %v", err)
	}
}

func TestPeerHangupReported(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	c := h.add(5)
	h.send(c, "last words")
	h.expect(5)
	if len(h.hangups) != 0 {
		t.Fatal("data reported as a hangup")
	}
	// The hangup comes flagged, though reading the data hides it.
	c.peer.Close()
	h.expect(5)
	select {
	case tok := <-h.hangups:
		if tok != 5 {
			t.Fatalf("hangup for token %#x", tok)
		}
	default:
		t.Fatal("hangup not flagged")
	}
	if n := readAll(t, c); n != len("last words") {
		t.Fatalf("read %d bytes", n)
	}
}

func TestRemoveAfterCloseFails(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	sentinel := h.add(1)
	a := h.add(2)
	b := h.add(3)
	h.send(a, "x")
	h.expect(2)
	a.local.Close()
	if err := h.p.Remove(&a.desc); err == nil {
		t.Fatal("Remove of a closed socket succeeded")
	}
	// The others are untouched.
	h.send(b, "y")
	h.expect(3)
	h.quiet(nil, sentinel)
	h.send(b, "z")
	h.expect(3)
}

func TestAddClosedSocketFails(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	_, local := tcptest.Pair(t)
	rc := rawConn(t, local)
	local.Close()
	var d Desc
	if err := func() error { d.Init(rc, 1); return h.p.Add(&d) }(); err == nil {
		t.Fatal("Add of a closed socket succeeded")
	}
}

func TestManyRegistrations(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	const n = 32
	conns := make([]*conn, n)
	for i := range conns {
		conns[i] = h.add(uint64(i) << 33) // tokens beyond 32 bits
	}
	for _, c := range conns {
		h.send(c, "x")
	}
	seen := make(map[uint64]bool)
	for range n {
		select {
		case tok := <-h.reports:
			if seen[tok] || tok>>33 >= n || tok&(1<<33-1) != 0 {
				t.Fatalf("unexpected or repeated token %#x", tok)
			}
			seen[tok] = true
		case <-time.After(wait):
			t.Fatalf("%d of %d reports", len(seen), n)
		}
	}
	// Each reader drains concurrently, as the router's workers do; a
	// second round of data is reported once each.
	errs := make(chan error, n)
	for _, c := range conns {
		go func() {
			var rerr error
			c.rc.Read(func(fd uintptr) bool {
				var buf [16]byte
				_, rerr = unix.Read(int(fd), buf[:])
				return true
			})
			errs <- rerr
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		h.send(c, "y")
	}
	clear(seen)
	for range n {
		select {
		case tok := <-h.reports:
			if seen[tok] {
				t.Fatalf("token %#x reported twice", tok)
			}
			seen[tok] = true
		case <-time.After(wait):
			t.Fatalf("%d of %d reports in round 2", len(seen), n)
		}
	}
}

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	p, err := New(func(uint64, bool) {})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run() }()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after Close")
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
}

// TestCloseBeforeRun: a Close that comes first still stops Run at once.
func TestCloseBeforeRun(t *testing.T) {
	t.Parallel()
	p, err := New(func(uint64, bool) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run() }()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after an earlier Close")
	}
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tok := range []uint64{0, 1, 1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 0xdeadbeefcafebabe, wakeToken - 1} {
		var ev unix.EpollEvent
		putToken(&ev, tok)
		if got := token(&ev); got != tok {
			t.Errorf("token round trip: %#x -> %#x", tok, got)
		}
	}
}

// TestTokenThroughKernel: a 64-bit token survives the kernel round trip.
func TestTokenThroughKernel(t *testing.T) {
	t.Parallel()
	h := startPoller(t)
	for i, tok := range []uint64{0, 0xdeadbeefcafebabe, 1 << 63} {
		c := h.add(tok)
		h.send(c, fmt.Sprint(i))
		h.expect(tok)
	}
}

// TestAddAfterCloseUsesStaleEpfd: once Run has returned it has closed the
// epoll descriptor, but Add and Remove still call epoll_ctl on its number. If
// the number was reused (here by a second Poller), the socket is registered
// with the wrong poller, whose handler then gets a token it never issued.
// Not parallel: it relies on the kernel handing out the lowest free
// descriptor to the next Poller.
func TestAddAfterCloseUsesStaleEpfd(t *testing.T) {
	p1, err := New(func(uint64, bool) {})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- p1.Run() }()
	p1.Close()
	select {
	case <-runErr:
	case <-time.After(wait):
		t.Fatal("Run did not return")
	}
	reports := make(chan uint64, 4)
	p2, err := New(func(tok uint64, _ bool) { reports <- tok })
	if err != nil {
		t.Fatal(err)
	}
	go p2.Run()
	defer p2.Close()
	if p2.epfd != p1.epfd {
		t.Skipf("epoll fd not reused (%d, %d): cannot show the bug here", p1.epfd, p2.epfd)
	}

	peer, local := tcptest.Pair(t)
	var d Desc
	d.Init(rawConn(t, local), 42)
	err = p1.Add(&d)
	if err == nil {
		t.Error("Add on a closed Poller succeeded")
	}
	if _, werr := peer.Write([]byte("x")); werr != nil {
		t.Fatal(werr)
	}
	// Prove p2 got nothing: a sentinel registered on p2 must be the only
	// report.
	sp, sl := tcptest.Pair(t)
	var sd Desc
	sd.Init(rawConn(t, sl), 7)
	if err := p2.Add(&sd); err != nil {
		t.Fatal(err)
	}
	c := &conn{local: local, rc: rawConn(t, local)}
	waitReadable(t, c)
	sp.Write([]byte("s"))
	select {
	case tok := <-reports:
		if tok != 7 {
			t.Fatalf("the second Poller reported token %d, registered through the first, closed one", tok)
		}
	case <-time.After(wait):
		t.Fatal("no report")
	}
}
