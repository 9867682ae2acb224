//go:build linux

package poll

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is an epoll instance delivering one-shot read readiness.
type Poller struct {
	epfd   int
	wakefd int // eventfd: wakes Run so that Close can stop it
	handle func(token uint64)

	// mu guards closed. epoll_ctl runs under its read lock, so once Close
	// has set closed no registration can reach the descriptor, which the
	// kernel may hand to a new poller after Run closes it.
	mu     sync.RWMutex
	closed bool
}

// Desc is a socket's registration. Embed it in the connection it belongs
// to; it must not be copied after Add.
type Desc struct {
	// mu serialises Add and Rearm calls on this Desc. They are the
	// reader's, which is exclusive, but the moment epoll_ctl arms the
	// socket a report can hand the turn to another goroutine that re-arms
	// before this one has read its result.
	mu    sync.Mutex
	rc    syscall.RawConn
	token uint64
	err   error
	op    int
	p     *Poller

	// ctl is d.control bound once at Add, so that re-arming does not
	// allocate a closure per call.
	ctl func(fd uintptr)
}

// New creates a poller that calls handle(token) from Run's goroutine each
// time a registered socket becomes readable, hung up or failed. handle must
// not block for long: it should hand the token to a worker.
func New(handle func(token uint64)) (*Poller, error) {
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

const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// Add registers the socket behind rc under token, armed: the first readiness
// is reported without a Rearm.
func (p *Poller) Add(d *Desc, rc syscall.RawConn, token uint64) error {
	d.mu.Lock()
	d.rc, d.token, d.p = rc, token, p
	d.ctl = d.control
	d.mu.Unlock()
	return d.do(unix.EPOLL_CTL_ADD)
}

// Rearm re-enables the one-shot registration after a report was handled.
// It fails (harmlessly) once the socket is closed. Add and Rearm must not
// run concurrently for one Desc: they are the reader's.
func (p *Poller) Rearm(d *Desc) error { return d.do(unix.EPOLL_CTL_MOD) }

// Remove unregisters the socket. Closing the socket also removes it; Remove
// exists so that a connection can leave the poller before it is closed. It
// may run concurrently with Rearm (Add and Rearm belong to the reader, which
// is exclusive; Remove to whoever closes), so it shares no scratch state.
func (p *Poller) Remove(d *Desc) error {
	d.mu.Lock()
	rc := d.rc
	d.mu.Unlock()
	if rc == nil {
		return nil
	}
	var err error
	cerr := rc.Control(func(fd uintptr) {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.closed {
			err = ErrClosed
			return
		}
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

func (d *Desc) do(op int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.op, d.err = op, nil
	if err := d.rc.Control(d.ctl); err != nil {
		return err
	}
	return d.err
}

func (d *Desc) control(fd uintptr) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.closed {
		d.err = ErrClosed
		return
	}
	ev := unix.EpollEvent{Events: readEvents}
	putToken(&ev, d.token)
	d.err = unix.EpollCtl(d.p.epfd, d.op, int(fd), &ev)
}

// Run waits for readiness and calls handle until Close. It is meant to run
// on one goroutine owned by the caller.
func (p *Poller) Run() error {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		for i := range n {
			tok := token(&events[i])
			if tok == wakeToken {
				p.mu.RLock()
				closed := p.closed
				p.mu.RUnlock()
				if closed {
					unix.Close(p.epfd)
					unix.Close(p.wakefd)
					return nil
				}
				continue
			}
			p.handle(tok)
		}
	}
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
