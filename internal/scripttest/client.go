package scripttest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Bounds on what a test client accepts from the server under test: a
// misbehaving script must fail its test, not exhaust the runner.
const (
	maxClientMessage = 16 << 20 // bytes in one message, fragments included
	clientQueue      = 1024     // received messages not yet read by the test; past it the reader stops reading (TCP backpressure)
)

// message is one data message the server sent.
type message struct {
	data   []byte
	binary bool
}

// client is a test's WebSocket connection: a goroutine reads frames into
// msgs (recording the close; pings go unanswered, see read) so that a
// recv that times out never leaves a frame half read.
type client struct {
	conn        net.Conn
	br          *bufio.Reader
	subprotocol string

	wmu       sync.Mutex // serialises frame writes (the test's sends, the reader's close reply)
	sentClose bool       // under wmu: a close frame went out, send nothing more

	msgs chan message
	quit chan struct{} // closed by shutdown: the reader stops waiting on msgs
	done chan struct{} // closed when the reader has returned; code and reason are set before
	// code and reason are the server's close frame (1006, "" when the
	// connection ended without one); read only after done is closed.
	code   int
	reason string
	once   sync.Once
}

// refusal is a handshake the server answered with an HTTP status.
type refusal struct {
	status int
	body   string
}

func (r *refusal) Error() string { return fmt.Sprintf("handshake refused: %d", r.status) }

// maxRefusalBody bounds how much of a refused handshake's body is kept.
const maxRefusalBody = 64 << 10

// dial connects to url (ws:// or wss://; wss trusts any certificate: the
// server is the runner's own, on loopback). A refused handshake is a
// *refusal.
func dial(ctx context.Context, url string, header http.Header, protocols []string) (*client, error) {
	var ref *refusal
	d := ws.Dialer{
		Protocols: protocols,
		TLSConfig: insecureTLS(),
		OnStatusError: func(status int, _ []byte, resp io.Reader) {
			ref = &refusal{status: status}
			if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
				body, _ := io.ReadAll(io.LimitReader(r.Body, maxRefusalBody))
				ref.body = string(body)
			}
		},
	}
	if len(header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		if ref != nil {
			return nil, ref
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	c := &client{conn: conn, br: br, subprotocol: hs.Protocol,
		msgs: make(chan message, clientQueue), quit: make(chan struct{}), done: make(chan struct{}), code: 1006}
	go c.read()
	return c, nil
}

// read runs until the connection ends or shutdown.
func (c *client) read() {
	defer close(c.done)
	var (
		buf   []byte
		isBin bool
	)
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return
		}
		if h.Masked || h.Length > maxClientMessage || int64(len(buf))+h.Length > maxClientMessage {
			c.code, c.reason = 1006, "test client: server sent a masked or oversized frame"
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			// Not answered: the server's pings come from heartbeats on
			// the test's virtual clock, and a pong arriving at some real
			// moment during a t:advance would make the outcome depend on
			// scheduling. A client stays alive by sending.
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			c.code, c.reason = 1005, ""
			if len(p) >= 2 {
				c.code, c.reason = int(binary.BigEndian.Uint16(p)), string(p[2:])
			}
			// Answer with the same code, as a browser does, unless the
			// test closed first (this is then the server's reply).
			_ = c.write(ws.OpClose, p[:min(len(p), 2)])
			return
		case ws.OpText, ws.OpBinary:
			buf, isBin = p, h.OpCode == ws.OpBinary
		case ws.OpContinuation:
			buf = append(buf, p...)
		}
		if !h.Fin {
			continue
		}
		select {
		case c.msgs <- message{data: buf, binary: isBin}:
		case <-c.quit:
			return
		}
		buf = nil
	}
}

// write sends one masked frame, unless a close frame already went out.
func (c *client) write(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentClose {
		return errors.New("connection is closing")
	}
	if op == ws.OpClose {
		c.sentClose = true
	}
	f := ws.MaskFrameInPlace(ws.NewFrame(op, true, append([]byte(nil), payload...)))
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteFrame(c.conn, f)
}

// send sends one data message.
func (c *client) send(data []byte, binary bool) error {
	op := ws.OpText
	if binary {
		op = ws.OpBinary
	}
	return c.write(op, data)
}

// recv returns the next message; ok false when the connection has ended
// and every message was read. It waits at most d, and not past ctx.
func (c *client) recv(ctx context.Context, d time.Duration) (m message, ok bool, err error) {
	select {
	case m := <-c.msgs: // a message already here goes first, even after the close
		return m, true, nil
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m := <-c.msgs:
		return m, true, nil
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m, true, nil
		default:
			return message{}, false, nil
		}
	case <-t.C:
		return message{}, false, errTimeout
	case <-ctx.Done():
		return message{}, false, ctx.Err()
	}
}

// errTimeout is a wait that ran out of its own time (not the test's).
var errTimeout = errors.New("timeout")

// wait waits at most d for the connection to end and returns the close.
func (c *client) wait(ctx context.Context, d time.Duration) (code int, reason string, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return c.code, c.reason, nil
	case <-t.C:
		return 0, "", errTimeout
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// closeWith starts the closing handshake with code and reason.
func (c *client) closeWith(code int, reason string) error {
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return c.write(ws.OpClose, append(p, reason...))
}

// shutdown drops the connection and waits for the reader; idempotent.
func (c *client) shutdown() {
	c.once.Do(func() {
		close(c.quit)
		_ = c.conn.Close()
		<-c.done
	})
}

// insecureTLS trusts any certificate: the runner dials only the server it
// started itself, on loopback, whose certificate the config names.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // see above
