//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errNoConn is returned when not one connection of an attack opened.
var errNoConn = errors.New("no connection opened")

// noConn wraps errNoConn with the dial failures.
func noConn(errs map[string]int) error {
	return fmt.Errorf("%w: %v", errNoConn, errs)
}

// pingFlood: every connection writes empty masked pings as fast as the
// socket takes them until -duration or -pings, and never reads. The
// server's pongs fill this side's receive buffer, then the server's send
// buffer; what the server does with the pongs after that is the test. At
// the end, each connection is read (-peek-time, -peek-bytes) for the
// server's close.
func pingFlood(ctx context.Context, cfg *config, res *result) error {
	conns, errs := dialAll(ctx, cfg.conns, cfg.dialConc, func(ctx context.Context, _ int) (*wsConn, error) {
		return dialWS(ctx, cfg, cfg.target.RequestURI())
	})
	res.Opened, res.DialErrors = len(conns), errs
	if len(conns) == 0 {
		return noConn(errs)
	}
	defer closeAll(conns)
	// 64 KiB of pings, 6 bytes each (2 of header, 4 of masking key).
	const frame = 6
	var buf []byte
	for len(buf)+frame <= 64<<10 {
		buf = appendFrame(buf, opPing, false, nil, newMaskKey())
	}
	var pings atomic.Int64
	we := newCounter()
	release := interruptOn(ctx, conns)
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit := cfg.pings * frame
			var sent int64
			for sent < limit && ctx.Err() == nil {
				n, err := c.Write(buf[:min(int64(len(buf)), limit-sent)])
				sent += int64(n)
				if err != nil {
					if !isTimeout(err) {
						we.add(errClass(err))
					}
					break
				}
			}
			pings.Add(sent / frame)
			<-ctx.Done() // hold the connection (and what the server queued for it) to the end
		}()
	}
	wg.Wait()
	release()
	res.Pings = pings.Load()
	if el := time.Since(start).Seconds(); el > 0 {
		res.PingsPerS = round2(float64(res.Pings) / el)
	}
	res.WriteErrors = we.m
	res.Ends = peekAll(cfg, conns)
	return nil
}

// inflate: every connection negotiates permessage-deflate on an echo
// route, sends one uncompressed binary frame of -max-message minus 1 KiB
// (the server's read buffer grows to hold it), then up to -frames
// compressed frames that each inflate to as many zeros, and never reads
// the echoes; it holds the connection to the end of -duration, then reads
// for the server's close.
func inflate(ctx context.Context, cfg *config, res *result) error {
	conns, errs := dialAll(ctx, cfg.conns, cfg.dialConc, func(ctx context.Context, _ int) (*wsConn, error) {
		return dialWS(ctx, cfg, cfg.target.RequestURI(), "Sec-WebSocket-Extensions: "+deflateOffer)
	})
	res.Opened, res.DialErrors = len(conns), errs
	if len(conns) == 0 {
		return noConn(errs)
	}
	defer closeAll(conns)
	n := cfg.maxMessage - 1024
	zeros := make([]byte, n)
	big := appendFrame(nil, opBinary, false, zeros, newMaskKey())
	bomb := deflateRaw(zeros)
	// The same compressed frame 16 times per write: no context is kept,
	// so each is a message of its own.
	one := appendFrame(nil, opBinary, true, bomb, newMaskKey())
	const batch = 16
	burst := slices.Repeat(one, batch)
	res.DeflatedFrameBytes = len(one)
	res.InflatesTo = n
	var bigSent, frames atomic.Int64
	we := newCounter()
	release := interruptOn(ctx, conns)
	var wg sync.WaitGroup
	for _, c := range conns {
		if !strings.Contains(c.extensions, "permessage-deflate") {
			continue
		}
		res.Negotiated++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-ctx.Done() }() // hold the connection to the end
			if _, err := c.Write(big); err != nil {
				if !isTimeout(err) {
					we.add(errClass(err))
				}
				return
			}
			bigSent.Add(1)
			for sent := 0; sent < cfg.frames && ctx.Err() == nil; {
				k := min(batch, cfg.frames-sent)
				w, err := c.Write(burst[:k*len(one)])
				sent += w / len(one)
				frames.Add(int64(w / len(one)))
				if err != nil {
					if !isTimeout(err) {
						we.add(errClass(err))
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	release()
	res.BigFrames = int(bigSent.Load())
	res.DeflatedFrames = frames.Load()
	res.InflatedBytes = res.DeflatedFrames * int64(n)
	res.WriteErrors = we.m
	res.Ends = peekAll(cfg, conns)
	return nil
}

// slowConn is one slowbody connection.
type slowConn struct {
	c       *net.TCPConn
	started time.Time // the request head was sent
	sent    int       // body bytes sent
	// Set by the connection's reader: the server's status line, if any,
	// and when the server ended the connection (zero: it did not).
	mu       sync.Mutex
	status   string
	answered time.Time
	ended    time.Time
	end      string
}

// slowBody: every connection sends a plain-HTTP POST head announcing
// -body-len bytes, then one body byte every -trickle, never the last one,
// until -duration. A reader per connection records the server's status
// line and when the server ends the connection.
func slowBody(ctx context.Context, cfg *config, res *result) error {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		cfg.target.RequestURI(), cfg.target.Host, cfg.bodyLen)
	var readers sync.WaitGroup
	conns, errs := dialAll(ctx, cfg.conns, cfg.dialConc, func(ctx context.Context, _ int) (*slowConn, error) {
		c, err := dialTCP(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if err := c.SetWriteDeadline(time.Now().Add(cfg.dialTimeout)); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := io.WriteString(c, head); err != nil {
			c.Close()
			return nil, err
		}
		sc := &slowConn{c: c, started: time.Now()}
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc.read()
		}()
		return sc, nil
	})
	res.Opened, res.DialErrors = len(conns), errs
	if len(conns) == 0 {
		return noConn(errs)
	}
	defer func() {
		for _, sc := range conns {
			sc.c.Close()
		}
	}()
	tcps := make([]*net.TCPConn, len(conns))
	for i, sc := range conns {
		tcps[i] = sc.c
	}
	release := interruptOn(ctx, tcps)
	we := newCounter()
	// One goroutine trickles every connection's body.
	tick := time.NewTicker(cfg.trickle)
	var body int64
trickle:
	for {
		select {
		case <-ctx.Done():
			break trickle
		case <-tick.C:
		}
		live := 0
		for _, sc := range conns {
			if ctx.Err() != nil {
				break
			}
			if sc.isEnded() || sc.writeFailed() {
				continue
			}
			live++
			if sc.sent >= cfg.bodyLen-1 {
				continue
			}
			_ = sc.c.SetWriteDeadline(time.Now().Add(cfg.trickle))
			if _, err := sc.c.Write([]byte{'a'}); err != nil {
				if !isTimeout(err) {
					we.add(errClass(err))
					sc.mu.Lock()
					sc.end = "write: " + errClass(err)
					sc.mu.Unlock()
				}
				continue
			}
			sc.sent++
			body++
		}
		if live == 0 {
			break // the server ended every connection: nothing left to hold
		}
	}
	tick.Stop()
	if ctx.Err() != nil {
		readers.Wait() // every reader ends by the deadline interruptOn sets
	}
	release()
	closeAll(tcps)
	readers.Wait()
	res.BodyBytes = body
	res.WriteErrors = we.m
	res.StatusLines = map[string]int{}
	ends := map[string]int{}
	var after, answered []float64
	for _, sc := range conns {
		sc.mu.Lock()
		if sc.status != "" {
			res.StatusLines[sc.status]++
			answered = append(answered, sc.answered.Sub(sc.started).Seconds())
		}
		if !sc.ended.IsZero() {
			res.ServerClosed++
			after = append(after, sc.ended.Sub(sc.started).Seconds())
		}
		ends[sc.end]++
		sc.mu.Unlock()
	}
	res.Ends = ends
	res.ClosedAfterS, res.AnsweredAfterS = minMedMax(after), minMedMax(answered)
	return nil
}

// minMedMax returns the smallest, the median and the largest of v
// (rounded to two decimals), nil for none.
func minMedMax(v []float64) []float64 {
	if len(v) == 0 {
		return nil
	}
	slices.Sort(v)
	return []float64{round2(v[0]), round2(v[len(v)/2]), round2(v[len(v)-1])}
}

// read waits for the server's answer: its status line, then the end of
// the connection, until the attack's deadline.
func (sc *slowConn) read() {
	br := bufio.NewReaderSize(sc.c, 4096)
	line, err := br.ReadString('\n')
	sc.mu.Lock()
	if line = strings.TrimSpace(line); strings.HasPrefix(line, "HTTP/") {
		sc.status, sc.answered = line, time.Now()
	}
	sc.mu.Unlock()
	for err == nil {
		_, err = br.Discard(br.Buffered() + 1)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	end := endClass(err)
	switch {
	case end == "open":
		if sc.end == "" {
			sc.end = "open"
		}
		if sc.status != "" {
			sc.end = "answered, open"
		}
		return
	case sc.status != "":
		end = sc.status + ", then " + end
	default:
		end = "no answer, " + end
	}
	sc.end, sc.ended = end, time.Now()
}

// isEnded reports whether the server ended the connection.
func (sc *slowConn) isEnded() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return !sc.ended.IsZero()
}

// writeFailed reports whether a write failed (the server reset the
// connection, or closed it).
func (sc *slowConn) writeFailed() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return strings.HasPrefix(sc.end, "write: ")
}

// chatStore: every connection joins a room of its own under the chat
// route (<url>/<run id>-<i>) and sends -msgs text messages of -size bytes
// (the script keeps each as history in the shared store), reading and
// discarding what comes back, then closes (1000) and waits for the
// server's close: the server has handled every message before it answers
// a close.
func chatStore(ctx context.Context, cfg *config, res *result) error {
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	run := hex.EncodeToString(idb[:])
	base := strings.TrimSuffix(cfg.target.Path, "/")
	res.Room = base + "/" + run + "-N"
	conns, errs := dialAll(ctx, cfg.conns, cfg.dialConc, func(ctx context.Context, i int) (*wsConn, error) {
		return dialWS(ctx, cfg, fmt.Sprintf("%s/%s-%d", base, run, i))
	})
	res.Opened, res.DialErrors = len(conns), errs
	if len(conns) == 0 {
		return noConn(errs)
	}
	defer closeAll(conns)
	text := make([]byte, cfg.size)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	// One frame for every message: the same masking key each time is
	// allowed, and each message arrives as a string of its own.
	msg := appendFrame(nil, opText, false, text, newMaskKey())
	bye := appendFrame(nil, opClose, false, closePayload(1000, ""), newMaskKey())
	var sent, framesIn, bytesIn atomic.Int64
	we := newCounter()
	ends := newCounter()
	release := interruptOn(ctx, conns)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(2)
		closed := make(chan struct{})
		go func() { // reader: discard everything until the server's close
			defer wg.Done()
			defer close(closed)
			r := frameReader{br: c.br}
			ends.add(r.untilClose(c, time.Time{}, 0))
			framesIn.Add(r.frames)
			bytesIn.Add(r.bytes)
		}()
		go func() { // writer
			defer wg.Done()
			for m := 0; m < cfg.msgs && ctx.Err() == nil; m++ {
				select {
				case <-closed:
					return
				default:
				}
				if _, err := c.Write(msg); err != nil {
					if !isTimeout(err) {
						we.add(errClass(err))
					}
					return
				}
				sent.Add(1)
			}
			if ctx.Err() == nil {
				_, _ = c.Write(bye)
			}
		}()
	}
	wg.Wait()
	release()
	res.Messages = sent.Load()
	res.MessageBytes = res.Messages * int64(cfg.size)
	res.FramesIn, res.BytesIn = framesIn.Load(), bytesIn.Load()
	res.WriteErrors = we.m
	res.Ends = ends.m
	return nil
}

// counter counts strings, safe for concurrent use.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

// newCounter returns an empty counter.
func newCounter() *counter { return &counter{} }

// add counts s once.
func (c *counter) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[s]++
}
