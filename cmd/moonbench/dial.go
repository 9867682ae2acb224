//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// sourceAddrs returns the n local addresses connections are spread over:
// 127.0.0.2, 127.0.0.3, ... (at most 253 of them, up to 127.0.0.254). Every
// address of 127/8 is on the loopback interface on Linux, and each has its
// own ephemeral ports, so N can exceed one address's port range. n <= 0 or a
// target that is not on 127/8 gives nil: the kernel picks the address.
func sourceAddrs(n int, target string) ([]net.IP, error) {
	if n <= 0 {
		return nil, nil
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || ip.To4() == nil || ip.To4()[0] != 127 {
		return nil, fmt.Errorf("-sources needs a target on 127/8, not %q", u.Hostname())
	}
	n = min(n, 253)
	ips := make([]net.IP, n)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(2+i))
	}
	return ips, nil
}

// dialer dials WebSocket connections with gobwas/ws.
type dialer struct {
	urls    []string // the nodes; connection i goes to urls[node(i)]
	header  http.Header
	timeout time.Duration
	sources []net.IP
	// node picks the URL of connection i; nil: round-robin.
	node func(i int) int
}

// target is the URL of the i-th connection.
func (d *dialer) target(i int) string {
	if d.node != nil {
		return d.urls[d.node(i)]
	}
	return d.urls[i%len(d.urls)]
}

// wsDialer returns the gobwas dialer for the i-th connection: bound to one
// of the source addresses, if any. IP_BIND_ADDRESS_NO_PORT defers the
// choice of the port to connect(), so the port space is per destination.
func (d *dialer) wsDialer(i int) ws.Dialer {
	wd := ws.Dialer{Timeout: d.timeout}
	if len(d.header) > 0 {
		wd.Header = ws.HandshakeHeaderHTTP(d.header)
	}
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.sources) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: d.sources[i%len(d.sources)]}
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	wd.NetDial = nd.DialContext
	return wd
}

// rawConn is an upgraded connection taken out of Go's netpoller: its own
// non-blocking descriptor, plus whatever the server sent right after the
// handshake response.
type rawConn struct {
	fd    int
	pre   []byte
	local net.IP
}

// dialRaw dials and upgrades the i-th connection, then duplicates the
// socket's descriptor and closes the net.Conn: the socket stays open under
// the duplicate, for an epoll loop to drive.
func (d *dialer) dialRaw(ctx context.Context, i int) (rawConn, error) {
	conn, br, _, err := d.wsDialer(i).Dial(ctx, d.target(i))
	if err != nil {
		return rawConn{fd: -1}, err
	}
	rc := rawConn{fd: -1}
	if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		rc.local = ta.IP
	}
	if br != nil {
		n := br.Buffered()
		rc.pre = make([]byte, n)
		_, _ = br.Read(rc.pre)
		ws.PutReader(br)
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		conn.Close()
		return rc, errors.New("not a TCP connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		conn.Close()
		return rc, err
	}
	var derr error
	err = raw.Control(func(fd uintptr) {
		rc.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	conn.Close()
	if err == nil {
		err = derr
	}
	if err != nil {
		return rawConn{fd: -1}, err
	}
	if err := unix.SetNonblock(rc.fd, true); err != nil {
		unix.Close(rc.fd)
		return rawConn{fd: -1}, err
	}
	return rc, nil
}

// parseHeaders turns "Name: value" flags into a header.
func parseHeaders(hs []string) (http.Header, error) {
	h := http.Header{}
	for _, s := range hs {
		k, v, ok := strings.Cut(s, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("-header %q: want 'Name: value'", s)
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h, nil
}

// errClass names a dial or connection error for the report.
func errClass(err error) string {
	var se ws.StatusError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se):
		return fmt.Sprintf("http %d", int(se))
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "too many open files"
	case errors.Is(err, unix.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, unix.ECONNRESET):
		return "connection reset"
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, unix.EPIPE):
		return "broken pipe"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, unix.ETIMEDOUT):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}
