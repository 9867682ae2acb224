//go:build linux

package router

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// acceptedConn is a socket a Listener accepted for Serve, served by its
// handshake without entering net. net registers every socket it accepts
// with the runtime's netpoller, asks for its local address and sets
// TCP_NODELAY; the router then takes the upgraded socket out of net
// again (poll.FD.Own: a dup, a close and net's epoll removal). For a
// request that arrived with the connection (the Listener defers accepts
// until it has: TCP_DEFER_ACCEPT), a handshake is one read and one write,
// neither of which waits, so none of that is needed: the descriptor goes
// from accept4 straight to the Conn (take).
//
// A socket that must wait after all (a head split over packets, a client
// that sent nothing within the kernel's deferral, a response the socket
// cannot take at once) moves into net then (toNet), and everything after
// goes through net's conn as it did before; so does a request handed to
// net/http. It is a net.Conn either way, whose methods are called by the
// handshake's goroutine only, except the deadline setters, which Shutdown
// calls from its own.
type acceptedConn struct {
	// raddr is the peer's address as accept4 reported it: a value, made
	// into net's *TCPAddr only when asked for one (RemoteAddr), which a
	// handshake never does (see remoteAddrString).
	raddr netip.AddrPort

	mu sync.Mutex // guards what follows against SetDeadline from Shutdown
	fd int        // the socket while it is ours; -1 once closed or handed on
	// nc is net's conn on the socket once it had to wait (toNet); then fd
	// is -1 and every call goes to nc.
	nc       net.Conn
	rdl, wdl time.Time // deadlines kept while fd is ours, for nc to inherit
}

func newAcceptedConn(fd int, raddr netip.AddrPort) *acceptedConn {
	return &acceptedConn{fd: fd, raddr: raddr}
}

// sockAddrPort reads a socket address the kernel filled in (accept4,
// getsockname). An IPv4 address a dual-stack socket reports mapped into
// IPv6 is given as IPv4, which is how net prints it.
func sockAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), p.Port>>8|p.Port<<8)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		a := netip.AddrFrom16(p.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if zone := zoneName(p.Scope_id); zone != "" {
			a = a.WithZone(zone)
		}
		return netip.AddrPortFrom(a, p.Port>>8|p.Port<<8)
	}
	return netip.AddrPort{}
}

func zoneName(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return itoa(int(id))
}

// netConn returns net's conn on the socket, moving it there first.
func (ac *acceptedConn) netConn() (net.Conn, error) {
	if ac.nc != nil { // only this goroutine sets it
		return ac.nc, nil
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.toNet()
}

// movedToNet counts the sockets toNet moved, for the tests.
var movedToNet atomic.Int64

// toNet moves the socket into net, with the deadlines set so far (mu
// held).
func (ac *acceptedConn) toNet() (net.Conn, error) {
	if ac.fd < 0 {
		return nil, ac.opError("read", net.ErrClosed)
	}
	movedToNet.Add(1)
	nc, err := fileConn(ac.fd)
	ac.fd = -1
	if err != nil {
		return nil, err
	}
	if !ac.rdl.IsZero() {
		_ = nc.SetReadDeadline(ac.rdl)
	}
	if !ac.wdl.IsZero() {
		_ = nc.SetWriteDeadline(ac.wdl)
	}
	ac.nc = nc
	return nc, nil
}

// take hands the descriptor on to its new holder, the connection: false
// once the socket is net's (or closed), and then netConn has it.
func (ac *acceptedConn) take() (int, bool) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	fd := ac.fd
	ac.fd = -1
	return fd, fd >= 0 && ac.nc == nil
}

// Read reads what the socket holds, and moves it into net to wait when
// it holds nothing yet.
func (ac *acceptedConn) Read(p []byte) (int, error) {
	if ac.nc != nil {
		return ac.nc.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	ac.mu.Lock()
	if err := ac.expired(ac.rdl, "read"); err != nil {
		ac.mu.Unlock()
		return 0, err
	}
	// Raw system calls, as accept4's (see there): the socket is
	// non-blocking, and what one call copies is bounded by the socket's
	// buffers.
	n, err := ignoringEINTR(func() (int, error) {
		r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(ac.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	})
	switch {
	case err == unix.EAGAIN:
		nc, err := ac.toNet()
		ac.mu.Unlock()
		if err != nil {
			return 0, err
		}
		return nc.Read(p)
	case err != nil:
		ac.mu.Unlock()
		return 0, ac.opError("read", os.NewSyscallError("read", err))
	case n == 0:
		ac.mu.Unlock()
		return 0, io.EOF
	}
	ac.mu.Unlock()
	return n, nil
}

// Write writes p, and moves the socket into net to wait for the rest
// when it cannot take all of it at once.
func (ac *acceptedConn) Write(p []byte) (int, error) {
	if ac.nc != nil {
		return ac.nc.Write(p)
	}
	ac.mu.Lock()
	if err := ac.expired(ac.wdl, "write"); err != nil {
		ac.mu.Unlock()
		return 0, err
	}
	written := 0
	for written < len(p) {
		n, err := ignoringEINTR(func() (int, error) { // raw, as Read's
			q := p[written:]
			r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(ac.fd), uintptr(unsafe.Pointer(&q[0])), uintptr(len(q)), unix.MSG_NOSIGNAL, 0, 0)
			if e != 0 {
				return 0, e
			}
			return int(r), nil
		})
		if err == unix.EAGAIN {
			nc, err := ac.toNet()
			ac.mu.Unlock()
			if err != nil {
				return written, err
			}
			n, err := nc.Write(p[written:])
			return written + n, err
		}
		if err != nil {
			ac.mu.Unlock()
			return written, ac.opError("write", os.NewSyscallError("write", err))
		}
		written += n
	}
	ac.mu.Unlock()
	return written, nil
}

// expired fails a call past its deadline, as net's conn would (mu held).
func (ac *acceptedConn) expired(deadline time.Time, op string) error {
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return ac.opError(op, os.ErrDeadlineExceeded)
	}
	if ac.fd < 0 {
		return ac.opError(op, net.ErrClosed)
	}
	return nil
}

func (ac *acceptedConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(ac.raddr), Err: err}
}

// Close closes the socket, wherever it is.
func (ac *acceptedConn) Close() error {
	if ac.nc != nil {
		return ac.nc.Close()
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.fd < 0 {
		return ac.opError("close", net.ErrClosed)
	}
	err := unix.Close(ac.fd)
	ac.fd = -1
	return err
}

// LocalAddr asks the socket: nothing on the handshake's path needs it.
func (ac *acceptedConn) LocalAddr() net.Addr {
	if ac.nc != nil {
		return ac.nc.LocalAddr()
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	if ac.fd >= 0 {
		_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(ac.fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
		if e == 0 {
			return net.TCPAddrFromAddrPort(sockAddrPort(&rsa))
		}
	}
	return &net.TCPAddr{}
}

// RemoteAddr is the peer's address, as accept4 reported it.
func (ac *acceptedConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(ac.raddr) }

// remoteAddrString is nc's RemoteAddr().String(), made with one
// allocation (the string) for a socket Serve accepted itself, where net's
// takes five.
func remoteAddrString(nc net.Conn) string {
	if ac, ok := nc.(*acceptedConn); ok {
		return ac.raddr.String()
	}
	return nc.RemoteAddr().String()
}

// SetDeadline sets both deadlines.
func (ac *acceptedConn) SetDeadline(t time.Time) error { return ac.setDeadlines(t, true, true) }

// SetReadDeadline sets the read deadline.
func (ac *acceptedConn) SetReadDeadline(t time.Time) error { return ac.setDeadlines(t, true, false) }

// SetWriteDeadline sets the write deadline.
func (ac *acceptedConn) SetWriteDeadline(t time.Time) error { return ac.setDeadlines(t, false, true) }

// setDeadlines keeps the deadlines for a socket that is still ours, and
// passes them to net's conn once it is there.
func (ac *acceptedConn) setDeadlines(t time.Time, read, write bool) error {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	switch {
	case ac.nc != nil && read && write:
		return ac.nc.SetDeadline(t)
	case ac.nc != nil && read:
		return ac.nc.SetReadDeadline(t)
	case ac.nc != nil:
		return ac.nc.SetWriteDeadline(t)
	}
	if read {
		ac.rdl = t
	}
	if write {
		ac.wdl = t
	}
	return nil
}

// fileConn returns net's conn on fd, a socket descriptor, and closes fd:
// net keeps a duplicate of its own.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	nc, err := net.FileConn(f)
	_ = f.Close()
	return nc, err
}

func ignoringEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}
