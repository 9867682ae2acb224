//go:build linux

package router

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenOptions are set on the listening socket, where Linux copies them
// to every socket it accepts, instead of on each accepted socket: Go's
// default TCP keep-alive (net.KeepAliveConfig's zero values) and
// TCP_NODELAY, which net sets on each socket it accepts.
var listenOptions = [...]struct{ level, opt, value int }{
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	// Accept a connection once its first bytes arrived (or, for one that
	// sends nothing, after about this many seconds), so that the
	// handshake finds its request waiting and a silent client costs the
	// process nothing meanwhile.
	{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSeconds},
}

// deferAcceptSeconds is TCP_DEFER_ACCEPT's value: the kernel holds a
// connection that sent nothing until it retransmits its SYN-ACK, about
// a second, and then hands it over.
const deferAcceptSeconds = 1

func listenConfig() net.ListenConfig {
	return net.ListenConfig{
		// Accepted sockets inherit the listener's options on Linux, so
		// net need not set them again on every Accept.
		KeepAlive: -1,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				for _, o := range listenOptions {
					if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.value); serr != nil {
						serr = os.NewSyscallError("setsockopt", serr)
						return
					}
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

// Listener is the TCP listener Listen returns on Linux. Serve accepts
// from it with accept4 on the listening descriptor, so that a socket's
// handshake runs without net (see acceptedConn); its Accept, for other
// servers, returns net's *net.TCPConn as net.Listener's would.
type Listener struct {
	f      *os.File // the listening socket, waited on through the runtime's netpoller
	rc     syscall.RawConn
	addr   net.Addr
	closed atomic.Bool
}

// Listen announces on the TCP address addr for Serve. It is net.Listen
// with two differences that show under connection churn. Options that
// net sets on every accepted socket (TCP keep-alive with Go's defaults,
// TCP_NODELAY) are set once on the listening socket, which Linux copies
// them from; and a connection is accepted once its request has arrived
// (TCP_DEFER_ACCEPT), so that Serve finds the request waiting.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := listenConfig()
	// net's error already reads "listen tcp ADDR: ...".
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The socket leaves net for an os.File, which the runtime's
	// netpoller still waits on: net's listener cannot wait for a
	// connection without accepting it.
	f, err := ln.(*net.TCPListener).File()
	a := ln.Addr()
	_ = ln.Close()
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return &Listener{f: f, rc: rc, addr: a}, nil
}

// acceptCall is one acceptFD's wait, with the callback bound once: from a
// pool, so that accepting allocates nothing of its own.
type acceptCall struct {
	nfd  int
	sa   netip.AddrPort
	aerr error
	fn   func(fd uintptr) bool
}

var acceptCalls = sync.Pool{New: func() any {
	c := new(acceptCall)
	c.fn = c.accept
	return c
}}

func (c *acceptCall) accept(fd uintptr) bool {
	for {
		c.nfd, c.sa, c.aerr = accept4(int(fd))
		switch c.aerr {
		case unix.EINTR, unix.ECONNABORTED:
			continue // as net does: the next one may be fine
		case unix.EAGAIN:
			return false // wait until one comes
		}
		return true
	}
}

// acceptFD waits for a connection and accepts it, non-blocking and
// close-on-exec. Once the Listener is closed it fails with net.ErrClosed.
func (l *Listener) acceptFD() (int, netip.AddrPort, error) {
	c := acceptCalls.Get().(*acceptCall)
	err := l.rc.Read(c.fn)
	// The call's fields are read only when err is nil: a wait that failed
	// (the listener closed) never called fn, and they are the last
	// accept's.
	nfd, sa, aerr := c.nfd, c.sa, c.aerr
	c.aerr = nil
	acceptCalls.Put(c)
	if err != nil {
		if l.closed.Load() {
			err = net.ErrClosed // os reports its own, internal error
		}
		return -1, netip.AddrPort{}, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
	}
	if aerr != nil {
		return -1, netip.AddrPort{}, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: os.NewSyscallError("accept4", aerr)}
	}
	return nfd, sa, nil
}

// Accept waits for and returns the next connection, as net's conn.
func (l *Listener) Accept() (net.Conn, error) {
	fd, _, err := l.acceptFD()
	if err != nil {
		return nil, err
	}
	nc, err := fileConn(fd)
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
	}
	return nc, nil
}

// Close stops listening; a waiting Accept fails with net.ErrClosed.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// rawAccept returns how Serve accepts from ln without net, or nil when
// it cannot (another listener, or a server without a poller).
func (s *Server) rawAccept(ln net.Listener) func() (net.Conn, error) {
	l, ok := ln.(*Listener)
	if !ok || s.poller == nil {
		return nil
	}
	return func() (net.Conn, error) {
		fd, sa, err := l.acceptFD()
		if err != nil {
			return nil, err
		}
		return newAcceptedConn(fd, sa), nil
	}
}

// ownAccepted gives c the descriptor of nc, a socket Serve accepted
// without net, if its handshake never had to wait; else it returns the
// net.Conn that holds the socket now.
func ownAccepted(c *Conn, nc net.Conn) (net.Conn, bool) {
	ac, ok := nc.(*acceptedConn)
	if !ok {
		return nc, false
	}
	if fd, ok := ac.take(); ok {
		c.sock.Adopt(fd)
		return nil, true
	}
	if inner, err := ac.netConn(); err == nil {
		return inner, false
	}
	return nc, false
}

// netConnOf returns the net.Conn that holds nc's socket, moving a socket
// Serve accepted without net into net (for net/http).
func netConnOf(nc net.Conn) net.Conn {
	if ac, ok := nc.(*acceptedConn); ok {
		if inner, err := ac.netConn(); err == nil {
			return inner
		}
	}
	return nc
}

// accept4 is unix.Accept4 as a raw system call: the listening socket is
// non-blocking, so it never sleeps, and the scheduler's hand-off of the
// processor around it (for a call that does a connection's kernel work
// inline) costs more than it frees. It returns the peer's address.
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), sockAddrPort(&rsa), nil
}
