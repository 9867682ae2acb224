//go:build linux

package poll

import (
	"errors"
	"net"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// FD is a socket descriptor held outright, outside the Go runtime's
// netpoller. For every socket it holds, net keeps a netpoller descriptor
// and a finalizer record off the heap (592 bytes, measured) and its own
// objects on it (312 bytes): for a connection that the Poller reads and
// the router's flushers write without waiting, that was most of what it
// cost while idle. An FD is 16 bytes, embedded in the connection it
// belongs to (Own), whose reader and flusher are the ones that touch it:
// FDs of different connections packed side by side in a cache line would
// bounce it between CPUs.
//
// It implements syscall.RawConn, so that a Desc and the socket writers use
// it as they use net's. Each function runs between an acquire and a
// release of the descriptor, and Close closes it only once no function
// is running: closed under a read, the descriptor's number could be given
// to a new socket before the read, and one client's bytes handed to
// another. It never waits: a function that reports it is not done ends
// the call with ErrWouldBlock. A caller that must wait for the socket
// borrows a net.Conn for it (NetConn).
type FD struct {
	fd int
	// state is the number of functions running, times two, plus one once
	// Close was called.
	state atomic.Int64
}

// ErrWouldBlock is returned by an FD's Read or Write whose function
// reported that it is not done: an FD does not wait.
var ErrWouldBlock = errors.New("poll: the socket would block")

// acquire marks a function running; false once Close was called.
func (f *FD) acquire() bool {
	for {
		s := f.state.Load()
		if s&1 != 0 {
			return false
		}
		if f.state.CompareAndSwap(s, s+2) {
			return true
		}
	}
}

// release ends a function; the last one after Close closes the
// descriptor.
func (f *FD) release() {
	if f.state.Add(-2) == 1 {
		_ = closeFD(f.fd)
	}
}

// Close closes the descriptor now, or when the functions running on it
// return. Later calls fail with net.ErrClosed, so that the router's
// readers and writers see a closed socket as they would net's.
func (f *FD) Close() error {
	s := f.state.Or(1)
	switch {
	case s&1 != 0:
		return net.ErrClosed
	case s == 0:
		return closeFD(f.fd)
	}
	return nil // the last running function closes it
}

// Control runs fn on the descriptor.
func (f *FD) Control(fn func(fd uintptr)) error {
	if !f.acquire() {
		return net.ErrClosed
	}
	fn(uintptr(f.fd))
	f.release()
	return nil
}

// Acquire returns the descriptor, held open until Release, for a caller
// that hands it to the kernel outside a function of its own (a batch of
// sends on an io_uring); false once Close was called.
func (f *FD) Acquire() (int, bool) {
	if !f.acquire() {
		return -1, false
	}
	return f.fd, true
}

// Release ends what Acquire began.
func (f *FD) Release() { f.release() }

// Read runs fn on the descriptor once; it never waits for readiness.
func (f *FD) Read(fn func(fd uintptr) (done bool)) error { return f.once(fn) }

// Write runs fn on the descriptor once; it never waits for readiness.
func (f *FD) Write(fn func(fd uintptr) (done bool)) error { return f.once(fn) }

func (f *FD) once(fn func(fd uintptr) bool) error {
	if !f.acquire() {
		return net.ErrClosed
	}
	done := fn(uintptr(f.fd))
	f.release()
	if !done {
		return ErrWouldBlock
	}
	return nil
}

// NetConn returns a net.Conn on a duplicate of the descriptor, for what
// must wait on the socket (a write to a full one, under a deadline): the
// runtime's netpoller then does the waiting, for as long as the caller
// keeps it. The socket stays open until both are closed; so that a closed
// FD leaves the Poller's set while the duplicate lives, the caller removes
// it from the Poller first.
func (f *FD) NetConn() (net.Conn, error) {
	var nfd int
	var err error
	if cerr := f.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	file := os.NewFile(uintptr(nfd), "socket")
	nc, err := net.FileConn(file) // a duplicate of its own
	_ = file.Close()
	return nc, err
}

// Adopt makes f, a zero FD that is not yet shared, the holder of fd: a
// socket descriptor that nothing else holds or will close.
func (f *FD) Adopt(fd int) { f.fd = fd }

// Own takes nc's socket out of net into f, a zero FD that is not yet
// shared: it keeps a duplicate of the descriptor and closes nc, which
// frees net's objects and the netpoller's registration. It reports false,
// leaving nc as it is, for a connection that is not a plain TCP socket.
func (f *FD) Own(nc net.Conn) bool {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	nfd := -1
	if rc.Control(func(fd uintptr) { nfd, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }) != nil || nfd < 0 {
		return false
	}
	_ = tc.Close()
	f.fd = nfd
	return true
}

// closeFD closes a socket descriptor with a raw system call: without
// SO_LINGER a socket's close never sleeps, and the scheduler's hand-off
// of the processor around it (for a call that sends the FIN inline)
// costs more than it frees.
func closeFD(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}
