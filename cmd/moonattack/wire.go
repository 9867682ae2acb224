//go:build linux

package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xa
)

// deflateOffer is the permessage-deflate offer of the inflate attack: no
// context kept on either side, so every message is compressed on its own
// and one compressed payload can be sent again and again.
const deflateOffer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// wsConn is an upgraded connection on a plain TCP socket, with the reader
// that holds whatever the server sent right after its handshake response.
type wsConn struct {
	*net.TCPConn
	br *bufio.Reader
	// extensions is the server's Sec-WebSocket-Extensions answer.
	extensions string
}

// dialTCP connects to the target's host and port within -dial-timeout.
func dialTCP(ctx context.Context, cfg *config) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: cfg.dialTimeout}
	c, err := d.DialContext(ctx, "tcp", cfg.target.Host)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialWS connects and upgrades to WebSocket on path (the request target,
// query included), adding the extra header lines ("Name: value") to the
// request, all within -dial-timeout.
func dialWS(ctx context.Context, cfg *config, path string, extra ...string) (*wsConn, error) {
	c, err := dialTCP(ctx, cfg)
	if err != nil {
		return nil, err
	}
	wc, err := upgrade(c, cfg.target.Host, path, time.Now().Add(cfg.dialTimeout), extra)
	if err != nil {
		c.Close()
		return nil, err
	}
	return wc, nil
}

// upgrade writes the handshake request on c and reads the response
// before deadline: 101 with the right Sec-WebSocket-Accept, or an
// httpStatusError.
func upgrade(c *net.TCPConn, host, path string, deadline time.Time, extra []string) (*wsConn, error) {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, host, key)
	for _, h := range extra {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, req.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	tp := textproto.NewReader(br)
	status, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("handshake response: %w", err)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("handshake response: %w", err)
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "101" {
		return nil, httpStatusError(status)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if hdr.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("handshake response: wrong Sec-WebSocket-Accept")
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return &wsConn{TCPConn: c, br: br, extensions: hdr.Get("Sec-WebSocket-Extensions")}, nil
}

// httpStatusError is a handshake refused with this status line.
type httpStatusError string

// Error returns the status line.
func (e httpStatusError) Error() string { return "refused: " + string(e) }

// dialAll opens n connections with dial, conc at a time, until ctx ends;
// it returns the connections that opened and the failures by kind.
func dialAll[T any](ctx context.Context, n, conc int, dial func(ctx context.Context, i int) (T, error)) ([]T, map[string]int) {
	var (
		mu    sync.Mutex
		conns []T
		errs  map[string]int
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, conc)
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errs == nil {
					errs = map[string]int{}
				}
				errs[errClass(err)]++
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	if skipped := n - len(conns) - sum(errs); skipped > 0 {
		if errs == nil {
			errs = map[string]int{}
		}
		errs["not dialed: -duration over"] += skipped
	}
	return conns, errs
}

// sum adds up a map's counts.
func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// interruptOn makes every pending and future read and write of conns fail
// once ctx ends (the attack's -duration, or a signal). The returned
// function disarms it and returns once it can no longer fire, so the
// caller can set deadlines of its own afterwards.
func interruptOn[C net.Conn](ctx context.Context, conns []C) (release func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			past := time.Unix(1, 0)
			for _, c := range conns {
				_ = c.SetDeadline(past)
			}
		case <-stop:
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// newMaskKey returns a random masking key.
func newMaskKey() [4]byte {
	var k [4]byte
	_, _ = rand.Read(k[:])
	return k
}

// appendFrame appends one final client frame to dst: the opcode (with
// RSV1 when compressed), the mask bit and key, and the payload masked with
// it.
func appendFrame(dst []byte, op byte, rsv1 bool, payload []byte, key [4]byte) []byte {
	b0 := 0x80 | op
	if rsv1 {
		b0 |= 0x40
	}
	dst = append(dst, b0)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// closePayload is a close frame's payload: the code and a reason.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// deflateRaw compresses p as one permessage-deflate message (RFC 7692
// §7.2.1): a raw DEFLATE stream ended by a sync flush, without the flush's
// final 0x00 0x00 0xff 0xff, which the receiver appends back.
func deflateRaw(p []byte) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		panic(err) // only for a bad level
	}
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(buf.Bytes(), []byte{0x00, 0x00, 0xff, 0xff})
}

// frameHead is the header of a frame the server sent.
type frameHead struct {
	fin    bool
	rsv1   bool
	op     byte
	length int64
}

// readHead reads a frame header (a server's frames are unmasked; a mask
// key, if any, is skipped).
func readHead(br *bufio.Reader) (frameHead, error) {
	var h frameHead
	var b [8]byte
	if _, err := io.ReadFull(br, b[:2]); err != nil {
		return h, err
	}
	h.fin, h.rsv1, h.op = b[0]&0x80 != 0, b[0]&0x40 != 0, b[0]&0x0f
	masked := b[1]&0x80 != 0
	switch n := b[1] & 0x7f; n {
	case 126:
		if _, err := io.ReadFull(br, b[:2]); err != nil {
			return h, err
		}
		h.length = int64(binary.BigEndian.Uint16(b[:2]))
	case 127:
		if _, err := io.ReadFull(br, b[:8]); err != nil {
			return h, err
		}
		h.length = int64(binary.BigEndian.Uint64(b[:8]) & (1<<63 - 1))
	default:
		h.length = int64(n)
	}
	if masked {
		if _, err := br.Discard(4); err != nil {
			return h, err
		}
	}
	return h, nil
}

// frameReader reads the frames a server sends, discarding their payloads,
// until a close frame, an error or a limit.
type frameReader struct {
	br     *bufio.Reader
	frames int64
	bytes  int64
}

// untilClose reads frames until the server's close frame (returned as its
// outcome, "close 1008 slow consumer"), the end of the connection ("eof",
// "reset"), the deadline, or limit bytes read (both "open": the server had
// not closed yet, as far as was read). limit 0 is no limit; a zero
// deadline keeps the connection's.
func (r *frameReader) untilClose(c net.Conn, deadline time.Time, limit int64) string {
	if !deadline.IsZero() {
		// No deadline leaves the one interruptOn may have set in place.
		if err := c.SetReadDeadline(deadline); err != nil {
			return errClass(err)
		}
	}
	for limit <= 0 || r.bytes < limit {
		h, err := readHead(r.br)
		if err != nil {
			return endClass(err)
		}
		r.frames++
		r.bytes += 2 + h.length
		if h.op == opClose && h.length <= 125 {
			p := make([]byte, h.length)
			if _, err := io.ReadFull(r.br, p); err != nil {
				return endClass(err)
			}
			return closeClass(p)
		}
		for left := h.length; left > 0; {
			n, err := r.br.Discard(int(min(left, 1<<30)))
			left -= int64(n)
			if err != nil {
				return endClass(err)
			}
		}
	}
	return "open (read limit)"
}

// closeClass names a close frame by its payload: "close 1000",
// "close 1008 slow consumer".
func closeClass(p []byte) string {
	if len(p) < 2 {
		return "close (no code)"
	}
	s := "close " + strconv.Itoa(int(binary.BigEndian.Uint16(p)))
	if len(p) > 2 {
		s += " " + string(p[2:])
	}
	return s
}

// endClass names how a connection ended while being read: "eof" (the
// server closed it), "reset", or "open" (the read deadline passed first).
func endClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "open"
	}
	return errClass(err)
}

// errClass names an error for the report.
func errClass(err error) string {
	var se httpStatusError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se):
		return "http " + strings.Join(strings.Fields(string(se))[1:], " ")
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return err.Error()
}

// isTimeout reports whether err is a deadline passing: the end of the
// attack, not something the server did.
func isTimeout(err error) bool { return errClass(err) == "timeout" }

// peekAll reads every connection for up to -peek-time and -peek-bytes,
// looking for the server's close, and counts the outcomes.
func peekAll(cfg *config, conns []*wsConn) map[string]int {
	var mu sync.Mutex
	ends := map[string]int{}
	deadline := time.Now().Add(cfg.peekTime)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := frameReader{br: c.br}
			end := r.untilClose(c, deadline, cfg.peekBytes)
			mu.Lock()
			ends[end]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ends
}

// closeAll closes every connection.
func closeAll[C io.Closer](conns []C) {
	for _, c := range conns {
		_ = c.Close()
	}
}
