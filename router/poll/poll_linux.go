//go:build linux

package poll

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller is an epoll instance delivering edge-triggered read readiness:
// a registered socket is reported when data (or a hangup) arrives, not
// for as long as it stays readable.
type Poller struct {
	epfd   int
	wakefd int // eventfd: wakes Run so that Close can stop it
	handle func(token uint64, hangup bool)

	// mu guards closed. epoll_ctl runs under its read lock, so once Close
	// has set closed no registration can reach the descriptor, which the
	// kernel may hand to a new poller after Run closes it.
	mu     sync.RWMutex
	closed bool
}

// Desc is a socket's registration: 24 bytes, embedded in the connection
// it belongs to. Init it before the connection is shared; it is immutable
// afterwards, so Add and Remove may run from any goroutine. A connection
// that is not on the poller keeps its token in it all the same, with a
// nil socket.
type Desc struct {
	rc    syscall.RawConn
	token uint64
}

// Init binds the Desc to a socket and a token.
func (d *Desc) Init(rc syscall.RawConn, token uint64) { d.rc, d.token = rc, token }

// RawConn returns the socket Init bound, or nil before Init.
func (d *Desc) RawConn() syscall.RawConn { return d.rc }

// Token returns the token Init bound: what the poller reports the socket
// by.
func (d *Desc) Token() uint64 { return d.token }

// ctlCall is one epoll_ctl made inside RawConn.Control. Calls come from a
// pool, with the function bound once, so that registering allocates nothing
// and concurrent calls on one Desc share no scratch.
type ctlCall struct {
	p     *Poller
	op    int
	token uint64
	err   error
	ev    unix.EpollEvent
	fn    func(fd uintptr)
}

var ctlCalls = sync.Pool{New: func() any {
	c := new(ctlCall)
	c.fn = c.control
	return c
}}

func (c *ctlCall) control(fd uintptr) {
	c.p.mu.RLock()
	defer c.p.mu.RUnlock()
	if c.p.closed {
		c.err = ErrClosed
		return
	}
	var ev *unix.EpollEvent
	if c.op != unix.EPOLL_CTL_DEL {
		c.ev = unix.EpollEvent{Events: readEvents}
		putToken(&c.ev, c.token)
		ev = &c.ev
	}
	c.err = unix.EpollCtl(c.p.epfd, c.op, int(fd), ev)
}

func (p *Poller) ctl(d *Desc, op int) error {
	if d.rc == nil {
		return ErrClosed
	}
	c := ctlCalls.Get().(*ctlCall)
	c.p, c.op, c.token, c.err = p, op, d.token, nil
	err := d.rc.Control(c.fn)
	if err == nil {
		err = c.err
	}
	c.p = nil
	ctlCalls.Put(c)
	return err
}

// New creates a poller that calls handle(token, hangup) from Run's
// goroutine each time data arrives on a registered socket, or it is hung
// up or failed (hangup set). handle must not block for long: it should
// hand the token to a worker.
//
// A hangup is flagged because a read does not consume it the way it
// consumes data: a read that returns the last bytes does not report the
// end of the stream behind them, and no later edge will. Whoever reads
// must remember it and read until EOF or an error.
func New(handle func(token uint64, hangup bool)) (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.Join(ErrUnsupported, err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	putToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	return &Poller{epfd: epfd, wakefd: wakefd, handle: handle}, nil
}

// wakeToken marks the eventfd; connection tokens never take this value.
const wakeToken = ^uint64(0)

// readEvents are edge-triggered: a registration costs one epoll_ctl for
// the socket's life, where a one-shot one costs another after every read
// (a tenth of an echo's server CPU). The price is on the reader: an
// edge is reported once, so it must remember one that came while it was
// busy, and read again after a read that filled its buffer.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// Add registers the socket of an Init'ed Desc. Data already waiting is
// reported at once.
func (p *Poller) Add(d *Desc) error { return p.ctl(d, unix.EPOLL_CTL_ADD) }

// Remove unregisters the socket. Closing the socket also removes it; Remove
// exists so that a connection can leave the poller before it is closed.
// It fails (harmlessly) once the socket is closed.
func (p *Poller) Remove(d *Desc) error {
	if d.rc == nil {
		return nil
	}
	return p.ctl(d, unix.EPOLL_CTL_DEL)
}

// Run waits for readiness and calls handle until Close. It is meant to run
// on one goroutine owned by the caller.
//
// The epoll descriptor is itself pollable, so Run parks in the Go
// runtime's own netpoller rather than blocking a thread in epoll_wait:
// readiness then wakes a goroutine the way any socket read does, instead
// of a thread that must find a P before it can hand the token on.
func (p *Poller) Run() error {
	if err := unix.SetNonblock(p.epfd, true); err != nil {
		return p.runBlocking()
	}
	f := os.NewFile(uintptr(p.epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	events := make([]unix.EpollEvent, 256)
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = epollPoll(fd, events)
		return n > 0 || werr != nil
	}
	for {
		if err := rc.Read(wait); err != nil {
			return err
		}
		if werr != nil {
			if werr == unix.EINTR {
				continue
			}
			return werr
		}
		if p.dispatch(events[:n]) {
			f.Close()
			unix.Close(p.wakefd)
			return nil
		}
	}
}

// epollPoll collects the ready events without waiting. It is a raw
// system call: with a zero timeout epoll_wait never sleeps, and entering
// the scheduler's syscall state would wake the runtime's sysmon thread
// from its deep sleep each time the process comes back from idle, after
// which sysmon polls every 20 µs for a millisecond and more: at 100
// broadcasts a second that was 4.6% of the server's CPU.
// (epoll_pwait with no signal mask is epoll_wait, and exists on every
// architecture.)
func epollPoll(epfd uintptr, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// runBlocking is Run on a thread blocked in epoll_wait, for a descriptor
// the runtime cannot poll.
func (p *Poller) runBlocking() error {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		if p.dispatch(events[:n]) {
			unix.Close(p.epfd)
			unix.Close(p.wakefd)
			return nil
		}
	}
}

// dispatch hands the tokens of events to handle. It reports true when the
// poller was closed, and Run must stop.
func (p *Poller) dispatch(events []unix.EpollEvent) bool {
	for i := range events {
		tok := token(&events[i])
		if tok == wakeToken {
			p.mu.RLock()
			closed := p.closed
			p.mu.RUnlock()
			if closed {
				return true
			}
			continue
		}
		p.handle(tok, events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
	return false
}

// Close stops Run. Registered sockets are not closed.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	p.closed = true
	var one = [8]byte{1}
	_, err := unix.Write(p.wakefd, one[:])
	return err
}

// The 64-bit epoll data union is exposed by x/sys as two int32 fields.
func putToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd = int32(uint32(tok))
	ev.Pad = int32(uint32(tok >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
