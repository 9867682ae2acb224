//go:build linux

package router_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// serveListen starts a router on router.Listen's listener, as the
// moonwire command does, so that it accepts without net; the server is
// shut down when the test ends.
func serveListen(t *testing.T, cfg router.Config) string {
	t.Helper()
	srv, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := router.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// echoRequest is a whole upgrade request for /echo.
const echoRequest = "GET /echo HTTP/1.1\r\nHost: x\r\n" + upgradeHead + goodKey + "\r\n"

// upgradeThenEcho writes the upgrade request in the pieces given, calling
// between before each after the first, and a text frame right behind the
// last; it expects the 101 and the frame echoed.
func upgradeThenEcho(t *testing.T, addr string, between func(), pieces ...string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(moontest.Timeout))
	pieces[len(pieces)-1] += string(clientFrame(true, 0, ws.OpText, []byte("early")))
	for i, p := range pieces {
		if i > 0 {
			between()
		}
		if _, err := io.WriteString(nc, p); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	h, err := ws.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, min(h.Length, 64))
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	if string(payload) != "early" {
		t.Fatalf("echoed %q, want %q", payload, "early")
	}
}

// TestAcceptWithoutNet: a request that arrived with its connection (the
// Listener defers accepts until one has) is upgraded and served without
// the socket entering net; a request that must be waited for, split over
// packets, moves into net and is served the same.
func TestAcceptWithoutNet(t *testing.T) {
	addr := serveListen(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}}}})

	before := router.MovedToNet()
	const n = 20
	for range n {
		upgradeThenEcho(t, addr, nil, echoRequest)
	}
	// Only a client stalled for a second between its connect and its
	// request (the kernel's deferral) could make a socket move here.
	if moved := router.MovedToNet() - before; moved > 2 {
		t.Errorf("%d of %d whole requests moved into net", moved, n)
	}

	// The rest of the head is sent once the server waits for it.
	before = router.MovedToNet()
	i := strings.Index(echoRequest, "Upgrade:")
	upgradeThenEcho(t, addr, func() {
		moontest.WaitFor(t, "the server to wait for the rest of the head", func() bool { return router.MovedToNet() > before })
	}, echoRequest[:i], echoRequest[i:])
}

// TestAcceptWithoutNetPlainHTTP: a request for no route goes to net/http
// on the same socket, which answers it and keeps it alive for the next.
func TestAcceptWithoutNetPlainHTTP(t *testing.T) {
	t.Parallel()
	addr := serveListen(t, router.Config{Routes: []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}}}})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(moontest.Timeout))
	br := bufio.NewReader(nc)
	for range 2 {
		if _, err := io.WriteString(nc, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	}
}

// TestAcceptWithoutNetSilentClient: a client that connects and sends
// nothing is accepted once the kernel's deferral ends, and cut off at the
// handshake timeout.
func TestAcceptWithoutNetSilentClient(t *testing.T) {
	t.Parallel()
	addr := serveListen(t, router.Config{
		Routes:           []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}}},
		HandshakeTimeout: 200 * time.Millisecond,
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
	if n, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v; want the server to hang up", n, err)
	}
}

// bigRefusal refuses every upgrade with a large body.
type bigRefusal struct {
	goEcho
	body string
}

func (bigRefusal) SkipHandshake() bool { return false }
func (h bigRefusal) Handshake(int, *router.Request) router.Verdict {
	return router.Verdict{Reject: true, Status: http.StatusForbidden, Body: h.body}
}

// TestAcceptWithoutNetFullSocket: an answer larger than the socket takes
// at once (a small send buffer, a client not reading yet) moves into net
// for the rest, which arrives whole and in order once the client reads.
func TestAcceptWithoutNetFullSocket(t *testing.T) {
	var body strings.Builder
	for i := 0; body.Len() < 1<<20; i++ {
		fmt.Fprintf(&body, "%08d,", i)
	}
	srv, err := router.New(router.Config{Routes: []router.RouteSpec{{Pattern: "/echo", Handler: bigRefusal{body: body.String()}}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := router.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Accepted sockets inherit the listener's send buffer, fixed small.
	if err := router.ListenerControl(ln.(*router.Listener), func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<10)
	}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	before := router.MovedToNet()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, echoRequest); err != nil {
		t.Fatal(err)
	}
	moontest.WaitFor(t, "the answer to fill the socket", func() bool { return router.MovedToNet() > before })
	_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(got), err)
	}
	if resp.StatusCode != http.StatusForbidden || !bytes.Equal(got, []byte(body.String())) {
		t.Fatalf("status %d, %d bytes of body, want 403 and the %d bytes sent", resp.StatusCode, len(got), body.Len())
	}
}

// TestListenerClose: Accept on a closed Listener fails with net.ErrClosed,
// and so does one waiting when it closes.
func TestListenerClose(t *testing.T) {
	t.Parallel()
	ln, err := router.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting Accept: %v, want net.ErrClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}
