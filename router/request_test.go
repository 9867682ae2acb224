package router_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// Plain HTTP under attack, and requests that two parsers could read two
// ways.

const upgradeHead = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"

const goodKey = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

// startStatic serves /echo and a static folder, with a short handshake
// (and plain-HTTP request) timeout.
func startStatic(t *testing.T, extra string) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(`
[server]
static_dir = "public"
handshake_timeout = "500ms"
`+extra+`
[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", echoScript, "public/hello.txt", "hello"))
}

// exchange writes req, then reads the answer until the server closes or
// the deadline passes; it reports whether the server closed.
func exchange(t *testing.T, nc net.Conn, req string, within time.Duration) (resp string, closed bool) {
	t.Helper()
	if req != "" {
		if _, err := nc.Write([]byte(req)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	_ = nc.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(nc)
	var ne net.Error
	timedOut := err != nil && errorsAs(err, &ne) && ne.Timeout()
	return string(b), !timedOut
}

func errorsAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// TestSlowRequestIsCutOff: a plain-HTTP request must arrive whole, body
// included, within the handshake timeout; a client that trickles its
// body (or its head) gets 408 and is disconnected. A trickled body used
// to hold its socket forever.
func TestSlowRequestIsCutOff(t *testing.T) {
	t.Parallel()
	s := startStatic(t, "")
	for _, tc := range []struct{ name, req string }{
		{"trickled body", "POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"},
		{"trickled head", "GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", s.Addr())
			must(t, err)
			defer nc.Close()
			must(t, nc.SetWriteDeadline(time.Now().Add(moontest.Timeout)))
			if _, err := nc.Write([]byte(tc.req)); err != nil {
				t.Fatal(err)
			}
			// One more byte every 100 ms, far slower than the request's
			// deadline allows; the server answers and hangs up meanwhile.
			answered := make(chan string, 1)
			go func() {
				resp, closed := exchange(t, nc, "", 20*time.Second)
				if !closed {
					resp = "(still open after 20 s) " + resp
				}
				answered <- resp
			}()
			var resp string
		trickle:
			for {
				select {
				case resp = <-answered:
					break trickle
				case <-time.After(100 * time.Millisecond):
					_, _ = nc.Write([]byte("b"))
				}
			}
			if !strings.HasPrefix(resp, "HTTP/1.1 408 ") {
				t.Fatalf("answer to a slow request: %q, want 408 and a hang-up", resp)
			}
		})
	}
}

// TestRequestBodyLimit: a plain-HTTP body larger than the limit gets 413,
// announced or chunked; a body the answer does not need (a route path, a
// 404) is not read at all, and the connection ends after the answer.
func TestRequestBodyLimit(t *testing.T) {
	t.Parallel()
	s := startStatic(t, "")
	big := strings.Repeat("x", 70<<10)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"announced", "POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", 413},
		{"chunked", fmt.Sprintf("POST /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big), 413},
		{"small", "GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 200},
		{"route path", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nab", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", s.Addr())
			must(t, err)
			defer nc.Close()
			resp, _ := exchange(t, nc, tc.req, 2*time.Second)
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.status); !strings.HasPrefix(resp, want) {
				t.Fatalf("answer %.60q, want %d", resp, tc.status)
			}
			if tc.status != 200 {
				if _, closed := exchange(t, nc, "", moontest.Timeout); !closed {
					t.Fatal("the server kept the connection open")
				}
			}
		})
	}
}

// TestPlainHTTPCountsAgainstMaxConnections: keep-alive HTTP connections
// take places under max_connections like WebSocket ones.
func TestPlainHTTPCountsAgainstMaxConnections(t *testing.T) {
	t.Parallel()
	s := startStatic(t, "max_connections = 2\n")
	var held []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", s.Addr())
		must(t, err)
		defer nc.Close()
		must(t, nc.SetDeadline(time.Now().Add(moontest.Timeout)))
		_, err = nc.Write([]byte("GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"))
		must(t, err)
		buf := make([]byte, 4096)
		n, err := nc.Read(buf)
		must(t, err)
		if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200 ") {
			t.Fatalf("GET: %q", buf[:n])
		}
		held = append(held, nc)
	}
	_, err := moontest.TryDial(t, s.URL("/echo"))
	expectRefusal(t, err, 503, "too many connections")
	if got := rawRequest(t, s.Addr(), "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"); got != 503 {
		t.Fatalf("a third HTTP connection: %d, want 503", got)
	}
	for _, nc := range held {
		nc.Close()
	}
	moontest.WaitFor(t, "a place to free up", func() bool {
		c, err := moontest.TryDial(t, s.URL("/echo"))
		if err == nil {
			c.Conn.Close()
		}
		return err == nil
	})
}

// TestStrictRequestParsing: what RFC 9112 and RFC 6455 §4.2.1 call
// malformed, or what two parsers could read two ways, gets 400, never 101.
func TestStrictRequestParsing(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	host := "Host: x\r\n"
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"two Host headers", "GET /echo HTTP/1.1\r\n" + host + host + upgradeHead + goodKey + "\r\n", 400},
		{"NUL in a header value", "GET /echo HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n" + upgradeHead + goodKey + "\r\n", 400},
		{"bare CR in a header value", "GET /echo HTTP/1.1\r\n" + host + "X-A: a\rb\r\n" + upgradeHead + goodKey + "\r\n", 400},
		{"space before the colon", "GET /echo HTTP/1.1\r\n" + host + "X-A : b\r\n" + upgradeHead + goodKey + "\r\n", 400},
		{"space before the Host colon", "GET /echo HTTP/1.1\r\nHost : x\r\n" + upgradeHead + goodKey + "\r\n", 400},
		{"obsolete line folding", "GET /echo HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n" + upgradeHead + goodKey + "\r\n", 400},
		{"key not base64", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + "Sec-WebSocket-Key: ************************\r\n\r\n", 400},
		{"key of 17 bytes", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", 400},
		{"two keys", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + goodKey + "\r\n", 400},
		{"absolute form, another host", "GET http://elsewhere.example/echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"absolute form, same host", "GET http://x/echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 101},
		{"absolute form, default port", "GET ws://x:80/echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 101},
		{"a body", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "Content-Length: 5\r\n\r\nhello", 400},
		{"chunked", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "Transfer-Encoding: chunked\r\n\r\n", 400},
		{"dot segments", "GET /x/../echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"escaped dot segments", "GET /x/%2e%2E/echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"escaped NUL", "GET /echo%00 HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"a control character in the target", "GET /ec\x01ho HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"a fragment in the target", "GET /echo#x HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 400},
		{"the well-formed request", "GET /echo HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 101},
		{"an escaped unreserved character", "GET /%65cho HTTP/1.1\r\n" + host + upgradeHead + goodKey + "\r\n", 101},
		// The same path, without an upgrade, must reach the same route:
		// a failed upgrade (400), or 405 for another method, never a 426
		// from the plain-HTTP side.
		{"the path without an upgrade", "GET /echo HTTP/1.1\r\n" + host + "\r\n", 400},
		{"an escaped path without an upgrade", "GET /%65cho HTTP/1.1\r\n" + host + "\r\n", 400},
		{"an escaped path with another method", "PUT /%65cho HTTP/1.1\r\n" + host + "\r\n", 405},
		{"escaped dot segments without an upgrade", "GET /x/%2e%2E/echo HTTP/1.1\r\n" + host + "\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", s.Addr())
			must(t, err)
			defer nc.Close()
			must(t, nc.SetDeadline(time.Now().Add(moontest.Timeout)))
			_, err = nc.Write([]byte(tc.req))
			must(t, err)
			buf := make([]byte, 512)
			n, _ := io.ReadAtLeast(nc, buf, 12)
			var status int
			if _, err := fmt.Sscanf(string(buf[:n]), "HTTP/1.1 %d", &status); err != nil || status != tc.status {
				t.Fatalf("answer %q, want %d", buf[:n], tc.status)
			}
		})
	}
}

// TestRecoversFromDescriptorExhaustion: slow plain-HTTP requests take
// every descriptor the process may open; once they are cut off (408),
// the accept loop must pick up again and upgrades succeed. (They used to
// hold their sockets forever: the server never recovered.) The server
// runs in a child process with a low descriptor limit.
func TestRecoversFromDescriptorExhaustion(t *testing.T) {
	if os.Getenv("MOONWIRE_TEST_FD_CHILD") == "1" {
		fdChild(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecoversFromDescriptorExhaustion$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MOONWIRE_TEST_FD_CHILD=1")
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, stderr.String())
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "addr "))

	// Far more slow requests than the child has descriptors for.
	for range 50 {
		nc, err := net.Dial("tcp", addr)
		must(t, err)
		defer nc.Close()
		_, _ = nc.Write([]byte("POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx"))
	}
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := moontest.TryDial(t, "ws://"+addr+"/echo")
		if err == nil {
			c.Send("back")
			c.Expect("back")
			return
		}
		last = err
	}
	t.Fatalf("no upgrade succeeded within 30 s of exhausting descriptors: %v", last)
}

// fdChild is the server side of TestRecoversFromDescriptorExhaustion.
func fdChild(t *testing.T) {
	s := startStatic(t, "")
	fds, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	// A few descriptors to spare: a handful of connections at a time.
	lim := syscall.Rlimit{Cur: uint64(len(fds) + 12), Max: uint64(len(fds) + 12)}
	must(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	fmt.Println("addr", s.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent is done
}

// trickle writes req, then one more byte every 100 ms until the server
// hangs up (20 s at most), and returns everything the server sent.
func trickle(t *testing.T, addr, req string) string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	must(t, err)
	defer nc.Close()
	must(t, nc.SetWriteDeadline(time.Now().Add(moontest.Timeout)))
	_, err = nc.Write([]byte(req))
	must(t, err)
	answered := make(chan string, 1)
	go func() {
		resp, closed := exchange(t, nc, "", 20*time.Second)
		if !closed {
			resp = "(still open after 20 s) " + resp
		}
		answered <- resp
	}()
	for {
		select {
		case resp := <-answered:
			return resp
		case <-time.After(100 * time.Millisecond):
			_, _ = nc.Write([]byte("b"))
		}
	}
}

// TestNoSecond408AfterAnAnswer: an answer that ends the connection (404,
// 405, 413) while the request's body still trickles in is the only one
// the client gets. net/http discards the rest of the body after the
// handler until the request's deadline, and that timeout used to put a
// raw, unrequested 408 behind the answer.
func TestNoSecond408AfterAnAnswer(t *testing.T) {
	t.Parallel()
	plain := startEcho(t, "[server]\nhandshake_timeout = \"500ms\"\n")
	static := startStatic(t, "")
	for _, tc := range []struct {
		name, addr, req string
		status          int
	}{
		{"404", plain.Addr(), "POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na", 404},
		{"405 on a route path", plain.Addr(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na", 405},
		{"413", static.Addr(), "POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\na", 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := trickle(t, tc.addr, tc.req)
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.status); !strings.HasPrefix(resp, want) {
				t.Fatalf("answer %q, want %d", resp, tc.status)
			}
			if n := strings.Count(resp, "HTTP/1.1 "); n != 1 {
				t.Fatalf("%d answers to one request:\n%s", n, resp)
			}
		})
	}
}

// TestPlainHTTPTimeoutFollowsReconfigure: a plain-HTTP request's deadline
// is the HandshakeTimeout of the moment, on new connections and on a
// keep-alive one opened before the change. (net/http kept the one of New:
// after a reconfiguration from 1 minute to 200 ms, a slow request still
// had its minute.)
func TestPlainHTTPTimeoutFollowsReconfigure(t *testing.T) {
	t.Parallel()
	srv, addr := serve(t, router.Config{HandshakeTimeout: time.Minute})
	t.Cleanup(func() { _ = srv.Close() })

	kept, err := net.Dial("tcp", addr)
	must(t, err)
	defer kept.Close()
	must(t, kept.SetDeadline(time.Now().Add(moontest.Timeout)))
	_, err = kept.Write([]byte("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"))
	must(t, err)
	br := bufio.NewReader(kept)
	line, err := br.ReadString('\n')
	must(t, err)
	if !strings.HasPrefix(line, "HTTP/1.1 404 ") {
		t.Fatalf("first answer %q, want 404", line)
	}
	for line != "\r\n" { // the rest of the head
		line, err = br.ReadString('\n')
		must(t, err)
	}

	must(t, srv.Reconfigure(router.Config{HandshakeTimeout: 200 * time.Millisecond}))

	// A slow head, on a new connection and on the kept one: 408 well
	// within the test's bound, not after a minute.
	fresh, err := net.Dial("tcp", addr)
	must(t, err)
	defer fresh.Close()
	slow := "GET /nothing HTTP/1.1\r\nHost: x\r\nX-Slow: a"
	if resp, _ := exchange(t, fresh, slow, 20*time.Second); !strings.HasPrefix(resp, "HTTP/1.1 408 ") {
		t.Fatalf("new connection: %q, want 408 within 20 s", resp)
	}
	must(t, kept.SetDeadline(time.Time{}))
	_, err = kept.Write([]byte(slow))
	must(t, err)
	must(t, kept.SetReadDeadline(time.Now().Add(20*time.Second)))
	rest, err := io.ReadAll(br)
	if !strings.Contains(string(rest), "HTTP/1.1 408 ") {
		t.Fatalf("kept-alive connection: %q (%v), want 408 within 20 s", rest, err)
	}
}

// TestPlainHTTPPlacesAreTakenBeforeTheyAreChecked: the last free place
// under max_connections goes to one plain-HTTP connection, however many
// arrive together. The place was checked before it was taken, so a
// connection held between the two (here by a hook; on a busy server by
// the scheduler) let the next one through as well.
func TestPlainHTTPPlacesAreTakenBeforeTheyAreChecked(t *testing.T) {
	t.Parallel()
	srv, err := router.New(router.Config{MaxConnections: 1})
	must(t, err)
	admitted := make(chan struct{}, 2)
	release := make(chan struct{})
	router.SetHTTPAdmittedHook(srv, func() {
		admitted <- struct{}{}
		select {
		case <-release:
		case <-time.After(moontest.Timeout):
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	var once sync.Once
	defer once.Do(func() { close(release) })

	req := "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
	first, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	defer first.Close()
	_, err = first.Write([]byte(req))
	must(t, err)
	select {
	case <-admitted:
	case <-time.After(moontest.Timeout):
		t.Fatal("the first connection was never let in")
	}

	second := make(chan string, 1)
	go func() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			second <- err.Error()
			return
		}
		defer nc.Close()
		if _, err := nc.Write([]byte(req)); err != nil {
			second <- err.Error()
			return
		}
		resp, _ := exchange(t, nc, "", moontest.Timeout)
		second <- resp
	}()
	select {
	case <-admitted:
		t.Fatal("max_connections = 1, and a second connection was let in")
	case resp := <-second:
		if !strings.HasPrefix(resp, "HTTP/1.1 503 ") {
			t.Fatalf("second connection: %q, want 503", resp)
		}
	}
	once.Do(func() { close(release) })
	must(t, first.SetReadDeadline(time.Now().Add(moontest.Timeout)))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(first, buf, 12)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 404 ") {
		t.Fatalf("first connection: %q (%v), want 404", buf[:n], err)
	}
}
