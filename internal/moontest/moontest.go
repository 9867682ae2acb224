// Package moontest runs a real moonwire node in-process on 127.0.0.1:0 and
// talks to it with a real WebSocket client (gobwas/ws on a TCP socket), for
// the project's end-to-end tests. Nothing is mocked: configs are files,
// scripts are files, frames cross loopback.
//
// Every wait has a deadline; nothing sleeps.
package moontest

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/flate"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// Timeout bounds every wait in this package.
const Timeout = 10 * time.Second

// Server is a server under test.
type Server struct {
	*moonwire.Server
	Dir  string
	logs *Logs
}

// Start writes files (relative names; "moonwire.toml" is the config) into
// a temporary folder, starts a node from it on 127.0.0.1:0 and stops it
// when the test ends.
func Start(t testing.TB, files map[string]string, tune ...func(*router.Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := StartFile(t, filepath.Join(dir, "moonwire.toml"), tune...)
	s.Dir = dir
	return s
}

// StartFile starts a node from an existing config file, on 127.0.0.1:0
// whatever its server.listen says.
func StartFile(t testing.TB, file string, tune ...func(*router.Config)) *Server {
	t.Helper()
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return StartConfig(t, cfg, tune...)
}

// StartConfig starts a node from a loaded config on 127.0.0.1:0; tune,
// if given, adjusts the router's configuration (a shared broker, say).
func StartConfig(t testing.TB, cfg *config.Config, tune ...func(*router.Config)) *Server {
	t.Helper()
	logs := &Logs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// OwnProcess: the tests run the server as the moonwire command does
	// (its array cap and memory limit default are what they test).
	n, err := moonwire.New(moonwire.Options{Config: cfg, Logger: log, Listen: "127.0.0.1:0", OwnProcess: true,
		Router: func(rc *router.Config) {
			// MOONWIRE_TEST_READER=goroutine runs the suite on the portable
			// read path (a goroutine per connection) instead of epoll.
			rc.NoPoller = os.Getenv("MOONWIRE_TEST_READER") == "goroutine"
			// MOONWIRE_TEST_FLUSH=plain runs it with the flush workers'
			// plain path (a system call per connection) instead of io_uring.
			rc.NoRing = os.Getenv("MOONWIRE_TEST_FLUSH") == "plain"
			for _, f := range tune {
				f(rc)
			}
		}})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &Server{Server: n, logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return s
}

// WriteFile (re)writes a file under the server's folder (Start only), as
// an operator editing a script would: to a temporary name, then renamed
// into place.
func (s *Server) WriteFile(t testing.TB, name, content string) {
	t.Helper()
	p := filepath.Join(s.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := p + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// URL returns the ws:// (wss:// with TLS) URL of path on the server.
func (s *Server) URL(path string) string { return s.Scheme() + "://" + s.Addr() + path }

// HTTPURL returns the http:// (https://) URL of path on the server.
func (s *Server) HTTPURL(path string) string {
	if s.Scheme() == "wss" {
		return "https://" + s.Addr() + path
	}
	return "http://" + s.Addr() + path
}

// Logs returns the server's log so far.
func (s *Server) Logs() string { return s.logs.String() }

// WaitLog waits until the log contains every one of parts on one line and
// returns that line.
func (s *Server) WaitLog(t testing.TB, parts ...string) string {
	t.Helper()
	var line string
	WaitFor(t, "log line with "+strings.Join(parts, ", "), func() bool {
		for _, l := range strings.Split(s.logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// Logs is a goroutine-safe log buffer.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer, for a slog handler.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// WaitFor polls cond until it holds or Timeout passes.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for d := time.Millisecond; ; d = min(2*d, 50*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(d)
	}
}

// Client is a WebSocket client connection under test.
type Client struct {
	t    testing.TB
	Conn net.Conn
	br   *bufio.Reader
	// Subprotocol is what the server selected.
	Subprotocol string
	// Extensions is what the server accepted (Sec-WebSocket-Extensions).
	Extensions string
	// ReadTimeout bounds each read by Next and friends; 0: Timeout.
	ReadTimeout time.Duration
}

// Refusal is a handshake the server answered with an HTTP error.
type Refusal struct {
	Status int
	Body   string
	Header http.Header
}

// Error implements error.
func (r *Refusal) Error() string { return fmt.Sprintf("refused: %d %q", r.Status, r.Body) }

// DialOptions tune Dial.
type DialOptions struct {
	Header    http.Header
	Protocols []string
	// Deflate offers permessage-deflate; Extension is the raw offer to send
	// instead of the default "permessage-deflate; client_max_window_bits".
	Deflate   bool
	Extension string
	// TLS configures wss:// dials (trusted roots, server name).
	TLS *tls.Config
	// ReadBuffer, when set, is the client socket's receive buffer
	// (SO_RCVBUF, set before connecting so the TCP window is small from
	// the start): a client that then stops reading fills the server's
	// send buffer after a few kilobytes.
	ReadBuffer int
}

// Dial connects or fails the test.
func Dial(t testing.TB, url string, opts ...DialOptions) *Client {
	t.Helper()
	c, err := TryDial(t, url, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

// TryDial connects; a refused handshake is a *Refusal.
func TryDial(t testing.TB, url string, opts ...DialOptions) (*Client, error) {
	var o DialOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	var refusal *Refusal
	d := ws.Dialer{
		Timeout:   Timeout,
		Protocols: o.Protocols,
		TLSConfig: o.TLS,
		OnStatusError: func(status int, reason []byte, resp io.Reader) {
			refusal = &Refusal{Status: status}
			r, err := http.ReadResponse(bufio.NewReader(resp), nil)
			if err == nil {
				body, _ := io.ReadAll(r.Body)
				refusal.Body, refusal.Header = string(body), r.Header
			}
		},
	}
	if o.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(o.Header)
	}
	if o.ReadBuffer > 0 {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.ReadBuffer)
			})
			return cmp.Or(err, serr)
		}}
		d.NetDial = nd.DialContext
	}
	if o.Deflate || o.Extension != "" {
		offer := o.Extension
		if offer == "" {
			offer = "permessage-deflate; client_max_window_bits"
		}
		opts, ok := httphead.ParseOptions([]byte(offer), nil)
		if !ok {
			return nil, errors.New("bad extension offer")
		}
		d.Extensions = opts
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		if refusal != nil {
			return nil, refusal
		}
		return nil, err
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	c := &Client{t: t, Conn: conn, br: br, Subprotocol: hs.Protocol}
	for i, e := range hs.Extensions {
		if i > 0 {
			c.Extensions += ", "
		}
		c.Extensions += string(e.Name)
		e.Parameters.ForEach(func(k, v []byte) bool {
			c.Extensions += "; " + string(k)
			if len(v) > 0 {
				c.Extensions += "=" + string(v)
			}
			return true
		})
	}
	t.Cleanup(func() { conn.Close() })
	return c, nil
}

// Frame is one frame read from the server.
type Frame struct {
	Op      ws.OpCode
	Fin     bool
	Payload []byte
	// Compressed: RSV1 was set (permessage-deflate); Payload is already
	// inflated.
	Compressed bool
}

// Text returns the payload as a string.
func (f Frame) Text() string { return string(f.Payload) }

// CloseCode returns the status code of a close frame (1005 if empty).
func (f Frame) CloseCode() (int, string) {
	if len(f.Payload) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

// WriteFrame sends one masked frame.
func (c *Client) WriteFrame(op ws.OpCode, fin bool, payload []byte) error {
	f := ws.NewFrame(op, fin, payload)
	f = ws.MaskFrameInPlace(ws.Frame{Header: f.Header, Payload: append([]byte(nil), payload...)})
	_ = c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	return ws.WriteFrame(c.Conn, f)
}

// WriteRaw sends bytes as they are.
func (c *Client) WriteRaw(b []byte) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	_, err := c.Conn.Write(b)
	return err
}

// Send sends a text message or fails the test.
func (c *Client) Send(text string) {
	c.t.Helper()
	if err := c.WriteFrame(ws.OpText, true, []byte(text)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// SendBinary sends a binary message or fails the test.
func (c *Client) SendBinary(b []byte) {
	c.t.Helper()
	if err := c.WriteFrame(ws.OpBinary, true, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// ReadFrame reads the next frame, whatever it is, within d (0: Timeout).
func (c *Client) ReadFrame(d time.Duration) (Frame, error) {
	if d == 0 {
		d = cmp.Or(c.ReadTimeout, Timeout)
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return Frame{}, err
	}
	if h.Length > 64<<20 {
		return Frame{}, errors.New("frame too large for a test")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return Frame{}, err
	}
	if h.Masked {
		return Frame{}, errors.New("server sent a masked frame")
	}
	f := Frame{Op: h.OpCode, Fin: h.Fin, Payload: p}
	if h.Rsv&0x4 != 0 {
		// A single compressed frame (the server never fragments).
		r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
		out, err := io.ReadAll(r)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("inflate: %w", err)
		}
		f.Payload, f.Compressed = out, true
	}
	return f, nil
}

// WriteCompressed sends one masked, compressed (RSV1) frame holding
// payload, as a permessage-deflate client would.
func (c *Client) WriteCompressed(op ws.OpCode, payload []byte) error {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = w.Write(payload)
	_ = w.Flush()
	body := bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	h := ws.Header{Fin: true, Rsv: 0x4, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(body))}
	var out bytes.Buffer
	_ = ws.WriteHeader(&out, h)
	ws.Cipher(body, h.Mask, 0)
	out.Write(body)
	return c.WriteRaw(out.Bytes())
}

// Next returns the next data message or close frame, answering pings and
// skipping pongs, or fails the test.
func (c *Client) Next() Frame {
	c.t.Helper()
	for {
		f, err := c.ReadFrame(0)
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		switch f.Op {
		case ws.OpPing:
			_ = c.WriteFrame(ws.OpPong, true, f.Payload)
		case ws.OpPong:
		default:
			return f
		}
	}
}

// Expect reads the next message and checks that it is text equal to want.
func (c *Client) Expect(want string) {
	c.t.Helper()
	f := c.Next()
	if f.Op != ws.OpText || string(f.Payload) != want {
		c.t.Fatalf("got %v %q, want text %q", f.Op, f.Payload, want)
	}
}

// ExpectBinary reads the next message and checks that it is binary equal
// to want.
func (c *Client) ExpectBinary(want []byte) {
	c.t.Helper()
	f := c.Next()
	if f.Op != ws.OpBinary || !bytes.Equal(f.Payload, want) {
		c.t.Fatalf("got %v %q, want binary %q", f.Op, f.Payload, want)
	}
}

// ExpectClose reads until a close frame and checks its code (and reason,
// when given), then checks that the server ends the TCP connection.
func (c *Client) ExpectClose(code int, reason ...string) {
	c.t.Helper()
	f := c.Next()
	if f.Op != ws.OpClose {
		c.t.Fatalf("got %v %q, want close %d", f.Op, f.Payload, code)
	}
	got, why := f.CloseCode()
	if got != code || (len(reason) > 0 && why != reason[0]) {
		c.t.Fatalf("close %d %q, want %d %q", got, why, code, reason)
	}
	// Answer, as a client should, and wait for the server to hang up.
	_ = c.WriteFrame(ws.OpClose, true, f.Payload[:min(2, len(f.Payload))])
	c.ExpectEOF()
}

// ExpectEOF checks that the server closes the TCP connection.
func (c *Client) ExpectEOF() {
	c.t.Helper()
	for {
		f, err := c.ReadFrame(0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("server did not close the connection")
			}
			return
		}
		if f.Op == ws.OpText || f.Op == ws.OpBinary {
			c.t.Fatalf("unexpected message after close: %q", f.Payload)
		}
	}
}

// Close performs the client side of the closing handshake with code.
func (c *Client) Close(code int) {
	c.t.Helper()
	body := binary.BigEndian.AppendUint16(nil, uint16(code))
	if err := c.WriteFrame(ws.OpClose, true, body); err != nil {
		c.t.Fatalf("close: %v", err)
	}
	for {
		f, err := c.ReadFrame(0)
		if err != nil {
			c.t.Fatalf("waiting for the close reply: %v", err)
		}
		if f.Op == ws.OpClose {
			if got, _ := f.CloseCode(); got != code {
				c.t.Fatalf("close reply %d, want %d", got, code)
			}
			break
		}
	}
	c.ExpectEOF()
}

// Files is a helper for building Start's map: a config and scripts.
func Files(config string, kv ...string) map[string]string {
	m := map[string]string{"moonwire.toml": config}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
