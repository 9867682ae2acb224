//go:build linux

package router

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// acceptedPair returns a client connection and the acceptedConn its
// Listener accepted for it, with a send buffer fixed small. The client
// has written hello, which releases its deferred accept.
func acceptedPair(t *testing.T, hello string) (net.Conn, *acceptedConn) {
	t.Helper()
	return acceptedPairOn(t, "127.0.0.1:0", hello)
}

func acceptedPairOn(t *testing.T, addr, hello string) (net.Conn, *acceptedConn) {
	t.Helper()
	ln, err := Listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := ln.(*Listener)
	_ = l.rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10) })
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, hello); err != nil {
		t.Fatal(err)
	}
	fd, sa, err := l.acceptFD()
	if err != nil {
		t.Fatal(err)
	}
	ac := newAcceptedConn(fd, sa)
	t.Cleanup(func() { _ = ac.Close() })
	if got, want := ac.RemoteAddr().String(), nc.LocalAddr().String(); got != want {
		t.Fatalf("RemoteAddr %s, want the client's %s", got, want)
	}
	if got, want := remoteAddrString(ac), nc.LocalAddr().String(); got != want {
		t.Fatalf("remoteAddrString %s, want the client's %s", got, want)
	}
	if got, want := ac.LocalAddr().String(), nc.RemoteAddr().String(); got != want {
		t.Fatalf("LocalAddr %s, want the address the client dialled, %s", got, want)
	}
	return nc, ac
}

// TestAcceptedConnWriteMovesMidWrite: one Write larger than the socket
// takes writes what it can, moves into net and writes the rest there:
// the client reads every byte once, in order.
func TestAcceptedConnWriteMovesMidWrite(t *testing.T) {
	nc, ac := acceptedPair(t, "x")
	_ = ac.SetDeadline(time.Now().Add(10 * time.Second))
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	got := make(chan []byte, 1)
	go func() {
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(nc, int64(len(big))))
		got <- b
	}()
	before := movedToNet.Load()
	if n, err := ac.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(big))
	}
	if movedToNet.Load() == before || ac.nc == nil {
		t.Fatal("4 MiB went into a 64 KiB send buffer without waiting")
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("client read %d bytes, not the %d written", len(b), len(big))
	}
}

// TestAcceptedConnReadMovesToWait: a Read finds what arrived, and the
// next, finding nothing, waits in net under the deadline set before.
func TestAcceptedConnReadMovesToWait(t *testing.T) {
	nc, ac := acceptedPair(t, "first")
	buf := make([]byte, 64)
	n, err := ac.Read(buf)
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	if ac.nc != nil {
		t.Fatal("moved into net with data waiting")
	}
	_ = ac.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := ac.Read(buf); !isTimeout(err) || ac.nc == nil {
		t.Fatalf("Read with nothing sent: %v (moved: %v); want a timeout in net", err, ac.nc != nil)
	}
	_ = ac.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "second"); err != nil {
		t.Fatal(err)
	}
	if n, err = ac.Read(buf); err != nil || string(buf[:n]) != "second" {
		t.Fatalf("Read in net: %q, %v", buf[:n], err)
	}
	if _, ok := ac.take(); ok {
		t.Fatal("take handed on a descriptor that net holds")
	}
}

// TestAcceptedConnDeadlineBeforeRead: a deadline already past fails a
// Read before it moves anything, as net's conn would.
func TestAcceptedConnDeadlineBeforeRead(t *testing.T) {
	_, ac := acceptedPair(t, "x")
	_ = ac.SetDeadline(time.Now().Add(-time.Second))
	if _, err := ac.Read(make([]byte, 8)); !isTimeout(err) || ac.nc != nil {
		t.Fatalf("Read past the deadline: %v (moved: %v); want a timeout, not moved", err, ac.nc != nil)
	}
	if _, err := ac.Write([]byte("y")); !isTimeout(err) {
		t.Fatalf("Write past the deadline: %v; want a timeout", err)
	}
	fd, ok := ac.take()
	if !ok || fd < 0 {
		t.Fatal("take refused a descriptor never moved")
	}
	_ = unix.Close(fd)
	if err := ac.Close(); err == nil {
		t.Fatal("Close after take closed something")
	}
}

// TestAcceptedConnIPv6: the peer's address of a socket accepted on IPv6
// reads as net's would (acceptedPairOn checks it).
func TestAcceptedConnIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		ln.Close()
	}
	_, ac := acceptedPairOn(t, "[::1]:0", "x")
	if a := ac.RemoteAddr().(*net.TCPAddr); a.IP.To4() != nil || !a.IP.IsLoopback() {
		t.Fatalf("RemoteAddr %v, want ::1", a)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestSockAddrPort: the peer's address as accept4 reports it reads as
// net would print it, in every family: IPv4, IPv6, IPv4 mapped into IPv6
// (a dual-stack listener's IPv4 client) and a scoped IPv6 address.
func TestSockAddrPort(t *testing.T) {
	in4 := func(a [4]byte, port uint16) *unix.RawSockaddrAny {
		var rsa unix.RawSockaddrAny
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p.Family, p.Addr, p.Port = unix.AF_INET, a, port>>8|port<<8
		return &rsa
	}
	in6 := func(a [16]byte, port uint16, scope uint32) *unix.RawSockaddrAny {
		var rsa unix.RawSockaddrAny
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p.Family, p.Addr, p.Port, p.Scope_id = unix.AF_INET6, a, port>>8|port<<8, scope
		return &rsa
	}
	lo := 1 // the loopback interface's index
	loName := "lo"
	if ifi, err := net.InterfaceByIndex(lo); err == nil {
		loName = ifi.Name
	}
	for _, c := range []struct {
		rsa  *unix.RawSockaddrAny
		want *net.TCPAddr
	}{
		{in4([4]byte{127, 0, 0, 1}, 40000), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}},
		{in4([4]byte{10, 1, 2, 3}, 1), &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 1}},
		{in6([16]byte{15: 1}, 443, 0), &net.TCPAddr{IP: net.IPv6loopback, Port: 443}},
		{in6([16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 0, 14: 2, 15: 7}, 8080, 0), &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 8080}},
		{in6([16]byte{0: 0xfe, 1: 0x80, 15: 9}, 65535, uint32(lo)), &net.TCPAddr{IP: net.ParseIP("fe80::9"), Port: 65535, Zone: loName}},
		{&unix.RawSockaddrAny{}, &net.TCPAddr{}},
	} {
		ap := sockAddrPort(c.rsa)
		if ap.IsValid() && ap.String() != c.want.String() {
			t.Errorf("%v: reads %s, net prints %s", c.want, ap, c.want)
		}
		if got := net.TCPAddrFromAddrPort(ap).String(); got != c.want.String() {
			t.Errorf("%v: as net's address %s, want %s", c.want, got, c.want)
		}
	}
}
