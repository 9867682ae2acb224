//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The engine drives many connections with few goroutines: each worker owns
// an epoll instance and the connections assigned to it, reads whatever is
// readable into one shared buffer, parses every complete frame in place,
// answers pings, and appends its sends (copies of a pre-encoded masked frame
// with the timestamp patched in) to the connection's write buffer, flushed
// with one write(2) per connection per wakeup. Nothing on the message path
// allocates; latency comes from the send time carried in the payload.

type role uint8

const (
	roleIdle role = iota // only answers pings
	roleEcho             // keeps inflight messages outstanding, checks replies
	roleSub              // counts deliveries by publisher and sequence
	rolePub              // publishes; also receives other publishers' messages
)

const (
	phaseRun     int32 = iota // the scenario runs
	phaseClosing              // close frames sent, waiting for the server to close
	phaseStop                 // close every socket and return
)

// spec is what every worker reads; it is set before the workers start and
// not written afterwards.
type spec struct {
	warmEnd  int64 // measurement window, ns since epoch
	end      int64
	inflight int
	size     int
	tmpl     *template
	key      [4]byte // mask of control frames

	// broadcast
	subs     int64
	pubs     []*publisher
	rate     float64 // total messages/s; 0: as fast as inflight allows
	interval int64   // ns between one publisher's messages
	burst    int64   // most slots a publisher catches up at once
}

// publisher is one publishing connection's schedule and counters.
type publisher struct {
	idx     uint32
	w       *worker // its owner, set before the engine starts
	c       *wconn
	phase0  int64 // time of its first slot
	seq     uint32
	sent    int64 // worker-local
	slots   int64
	skipped int64 // slots given up because the pipeline was full

	sentCounted atomic.Int64 // messages sent inside the window
	delivered   atomic.Int64 // deliveries of its messages, over all subscribers
	blocked     atomic.Bool  // waiting for deliveries (inflight reached)
}

// outstanding is how many of its messages have not reached every subscriber.
func (p *publisher) outstanding(subs int64) int64 {
	return p.sent - p.delivered.Load()/subs
}

// wconn is one connection of a worker.
type wconn struct {
	fd       int
	idx      int32
	role     role
	partial  []byte // bytes of an incomplete frame, carried to the next read
	need     int    // bytes the incomplete frame needs in all
	wbuf     []byte
	woff     int
	outArmed bool
	closed   bool

	closeSent bool // we sent a close frame
	gotClose  bool // the server sent one
	failed    bool // an error was counted for it

	// echo: send times of the outstanding messages, in order
	ring        []int64
	head, count int
	// sub: last sequence number seen per publisher
	lastSeq []uint32
	// pub
	pub *publisher
}

// wstats are a worker's counters, merged at the end.
type wstats struct {
	hist        hist
	ops         int64 // echo: replies in the window; broadcast: deliveries in the window
	mismatches  int64
	errors      int64
	errKinds    map[string]int64
	protocol    int64
	pings       int64
	unexpected  int64 // data messages that are not moonbench's
	outOfOrder  int64
	gaps        int64
	pubReceived int64

	// time blocked in epoll_wait, wakeups and events, inside the window
	waitNs  int64
	wakeups int64
	events  int64
	maxBusy float64 // merged: the busiest worker's share of the window
}

func (s *wstats) addErr(kind string) {
	s.errors++
	if s.errKinds == nil {
		s.errKinds = make(map[string]int64)
	}
	s.errKinds[kind]++
}

func (s *wstats) merge(o *wstats) {
	s.hist.merge(&o.hist)
	s.ops += o.ops
	s.mismatches += o.mismatches
	s.errors += o.errors
	for k, v := range o.errKinds {
		if s.errKinds == nil {
			s.errKinds = make(map[string]int64)
		}
		s.errKinds[k] += v
	}
	s.protocol += o.protocol
	s.pings += o.pings
	s.unexpected += o.unexpected
	s.outOfOrder += o.outOfOrder
	s.gaps += o.gaps
	s.pubReceived += o.pubReceived
	s.wakeups += o.wakeups
	s.events += o.events
}

type engine struct {
	sp      *spec
	workers []*worker
	phase   atomic.Int32
}

type worker struct {
	e       *engine
	sp      *spec
	epfd    int
	evfd    int
	conns   []*wconn
	pubs    []*publisher
	events  []unix.EpollEvent
	rbuf    []byte
	credit  []int64 // deliveries per publisher not yet published
	st      wstats
	closing bool

	live         atomic.Int64 // open connections
	delivCounted atomic.Int64 // deliveries of messages sent in the window

	mu       sync.Mutex
	incoming []rawConnRole
	done     chan struct{}
}

type rawConnRole struct {
	rc   rawConn
	role role
	pub  *publisher
}

var wakeBytes = []byte{1, 0, 0, 0, 0, 0, 0, 0}

const (
	readBufSize = 256 << 10
	maxFrame    = 64 << 20
	maxBacklog  = 4 << 20 // bytes a publisher may queue when the socket is full
)

func newEngine(n int, sp *spec) (*engine, error) {
	e := &engine{sp: sp}
	for i := 0; i < n; i++ {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			e.release()
			return nil, err
		}
		evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			unix.Close(epfd)
			e.release()
			return nil, err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
			unix.Close(epfd)
			unix.Close(evfd)
			e.release()
			return nil, err
		}
		w := &worker{
			e: e, sp: sp, epfd: epfd, evfd: evfd,
			events: make([]unix.EpollEvent, 512),
			rbuf:   make([]byte, readBufSize),
			credit: make([]int64, len(sp.pubs)),
			done:   make(chan struct{}),
		}
		e.workers = append(e.workers, w)
	}
	return e, nil
}

// release closes the descriptors of workers that never ran.
func (e *engine) release() {
	for _, w := range e.workers {
		unix.Close(w.epfd)
		unix.Close(w.evfd)
	}
	e.workers = nil
}

// add gives a connection to a worker before the engine starts.
func (w *worker) add(rc rawConn, r role, p *publisher) error {
	c := &wconn{fd: rc.fd, role: r, idx: int32(len(w.conns))}
	switch r {
	case roleEcho:
		c.ring = make([]int64, w.sp.inflight)
		c.wbuf = make([]byte, 0, w.sp.inflight*len(w.sp.tmpl.frame)+256)
	case roleSub, rolePub:
		c.lastSeq = make([]uint32, len(w.sp.pubs))
		if r == rolePub {
			c.pub = p
			p.c = c
			p.w = w
			w.pubs = append(w.pubs, p)
			c.wbuf = make([]byte, 0, max(w.sp.inflight, 16)*len(w.sp.tmpl.frame)+256)
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.idx}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		unix.Close(c.fd)
		return err
	}
	w.conns = append(w.conns, c)
	w.live.Add(1)
	if len(rc.pre) > 0 {
		c.partial = append(c.partial, rc.pre...)
	}
	return nil
}

// addLive hands a connection to a running worker.
func (w *worker) addLive(rc rawConn, r role) {
	w.mu.Lock()
	w.incoming = append(w.incoming, rawConnRole{rc: rc, role: r})
	w.mu.Unlock()
	w.wake()
}

func (w *worker) wake() { _, _ = unix.Write(w.evfd, wakeBytes) }

func (e *engine) start() {
	for _, w := range e.workers {
		go w.run()
	}
}

// live is the number of open connections.
func (e *engine) live() int64 {
	var n int64
	for _, w := range e.workers {
		n += w.live.Load()
	}
	return n
}

func (e *engine) delivCounted() int64 {
	var n int64
	for _, w := range e.workers {
		n += w.delivCounted.Load()
	}
	return n
}

// shutdown sends every connection a close frame, waits up to timeout for
// the server to close them, closes the rest, and returns the merged stats.
func (e *engine) shutdown(timeout time.Duration) *wstats {
	e.phase.Store(phaseClosing)
	for _, w := range e.workers {
		w.wake()
	}
	deadline := time.Now().Add(timeout)
	for e.live() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	e.phase.Store(phaseStop)
	var all wstats
	window := e.sp.end - e.sp.warmEnd
	for _, w := range e.workers {
		w.wake()
		<-w.done
		all.merge(&w.st)
		if window > 0 && e.sp.end != math.MaxInt64 {
			all.maxBusy = max(all.maxBusy, 100*(1-float64(w.st.waitNs)/float64(window)))
		}
	}
	return &all
}

func (w *worker) run() {
	defer close(w.done)
	defer w.closeAll()
	sp := w.sp
	if len(w.conns) > 0 {
		now := nowNs()
		for _, c := range w.conns {
			if len(c.partial) > 0 {
				w.process(c, nil, nowNs())
				w.flush(c)
			}
			if c.role == roleEcho && !c.closed {
				for i := 0; i < sp.inflight; i++ {
					w.echoSend(c, now)
				}
				w.flush(c)
			}
		}
	}
	for {
		switch w.e.phase.Load() {
		case phaseStop:
			return
		case phaseClosing:
			if !w.closing {
				w.beginClose()
			}
		}
		next := int64(math.MaxInt64)
		if !w.closing && len(w.pubs) > 0 {
			next = w.tickPubs(nowNs())
		}
		timeout := 100 // ms: the phase is looked at at least this often
		if next != math.MaxInt64 {
			d := next - nowNs()
			if d <= 0 {
				timeout = 0
			} else {
				timeout = min(timeout, int((d+999_999)/1_000_000))
			}
		}
		t0 := nowNs()
		n, err := unix.EpollWait(w.epfd, w.events, timeout)
		if t1 := nowNs(); t0 >= sp.warmEnd && t1 <= sp.end {
			w.st.waitNs += t1 - t0
			w.st.wakeups++
			w.st.events += int64(max(n, 0))
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			w.st.addErr("epoll: " + err.Error())
			return
		}
		for i := 0; i < n; i++ {
			ev := w.events[i]
			if ev.Fd < 0 {
				w.drainWake()
				continue
			}
			c := w.conns[ev.Fd]
			if c.closed {
				continue
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0 {
				w.readConn(c)
			}
			if !c.closed && ev.Events&unix.EPOLLOUT != 0 {
				w.flush(c)
			}
		}
		if len(w.credit) > 0 {
			w.flushCredits()
		}
	}
}

func (w *worker) drainWake() {
	var b [8]byte
	_, _ = unix.Read(w.evfd, b[:])
	w.mu.Lock()
	in := w.incoming
	w.incoming = nil
	w.mu.Unlock()
	for _, x := range in {
		if err := w.add(x.rc, x.role, x.pub); err != nil {
			w.st.addErr("epoll add: " + err.Error())
			continue
		}
		c := w.conns[len(w.conns)-1]
		if len(c.partial) > 0 {
			w.process(c, nil, nowNs())
			w.flush(c)
		}
		if w.closing && !c.closed {
			w.sendClose(c)
		}
	}
}

// readConn reads what the socket holds and handles every complete frame.
func (w *worker) readConn(c *wconn) {
	for {
		if c.need > len(w.rbuf) {
			w.rbuf = make([]byte, c.need+4096)
		}
		n0 := copy(w.rbuf, c.partial)
		n, err := unix.Read(c.fd, w.rbuf[n0:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			w.lose(c, errClass(err))
			return
		}
		if n == 0 {
			w.lose(c, "eof")
			return
		}
		total := n0 + n
		w.process(c, w.rbuf[:total], nowNs())
		if c.closed || total < len(w.rbuf) {
			break
		}
	}
	if !c.closed {
		w.flush(c)
	}
}

// process parses the frames in b (nil: c.partial) and keeps the incomplete
// tail in c.partial.
func (w *worker) process(c *wconn, b []byte, now int64) {
	if b == nil {
		b = append(w.rbuf[:0], c.partial...)
	}
	off := 0
	for off < len(b) && !c.closed {
		h, ok := parseHeader(b[off:])
		if !ok {
			c.need = 14
			break
		}
		if h.length > maxFrame {
			w.st.protocol++
			w.fail(c, "frame too large")
			return
		}
		size := h.hdrLen + int(h.length)
		if len(b)-off < size {
			c.need = size
			break
		}
		payload := b[off+h.hdrLen : off+size]
		off += size
		if h.masked {
			w.st.protocol++ // a server must not mask
			ws.Cipher(payload, h.mask, 0)
		}
		if h.rsv != 0 {
			w.st.protocol++
		}
		switch h.op {
		case ws.OpPing:
			w.st.pings++
			c.wbuf = appendControl(c.wbuf, ws.OpPong, payload, w.sp.key)
		case ws.OpPong:
		case ws.OpClose:
			w.onClose(c, payload)
		case ws.OpBinary, ws.OpText:
			if !h.fin {
				w.st.protocol++
				w.fail(c, "fragmented message")
				return
			}
			if !w.closing {
				w.onData(c, h.op, payload, now)
			}
		default:
			w.st.protocol++
			w.fail(c, "unexpected opcode")
			return
		}
	}
	if c.closed {
		return
	}
	c.partial = append(c.partial[:0], b[off:]...)
	if len(c.partial) == 0 {
		c.need = 0
	}
}

func (w *worker) onClose(c *wconn, payload []byte) {
	if c.gotClose {
		return
	}
	c.gotClose = true
	code := ws.StatusNoStatusRcvd
	if len(payload) >= 2 {
		code = ws.StatusCode(binary.BigEndian.Uint16(payload))
	}
	if !c.closeSent {
		// The server closed first: that is an error unless we are closing.
		if !w.closing && !c.failed {
			c.failed = true
			w.st.addErr("closed by server " + closeName(code))
		}
		reply := code
		if code == ws.StatusNoStatusRcvd {
			reply = ws.StatusNormalClosure
		}
		c.wbuf = appendClose(c.wbuf, reply, w.sp.key)
		c.closeSent = true
	}
	// Wait for the server to close the TCP connection (it closes first).
}

func closeName(code ws.StatusCode) string { return strconv.Itoa(int(code)) }

func (w *worker) onData(c *wconn, op ws.OpCode, p []byte, now int64) {
	sp := w.sp
	switch c.role {
	case roleEcho:
		if c.count == 0 {
			w.st.mismatches++ // a reply to nothing
			return
		}
		want := c.ring[c.head]
		c.head++
		if c.head == len(c.ring) {
			c.head = 0
		}
		c.count--
		if op != ws.OpBinary || len(p) != sp.size ||
			int64(binary.LittleEndian.Uint64(p)) != want ||
			!bytes.Equal(p[8:], sp.tmpl.payload[8:]) {
			w.st.mismatches++
		} else if now >= sp.warmEnd && now < sp.end {
			w.st.ops++
			w.st.hist.add(now - want)
		}
		if now < sp.end {
			w.echoSend(c, now)
		}
	case roleSub, rolePub:
		if op != ws.OpBinary || len(p) < minBroadcastSize {
			w.st.unexpected++
			return
		}
		pi := binary.LittleEndian.Uint32(p[8:12])
		seq := binary.LittleEndian.Uint32(p[12:16])
		if int(pi) >= len(sp.pubs) || seq == 0 {
			w.st.unexpected++
			return
		}
		if c.role == rolePub {
			w.st.pubReceived++
			return
		}
		if len(p) != sp.size || !bytes.Equal(p[16:], sp.tmpl.payload[16:]) {
			w.st.mismatches++
			return
		}
		last := c.lastSeq[pi]
		if seq <= last {
			w.st.outOfOrder++
			return
		}
		if seq > last+1 && last != 0 {
			w.st.gaps += int64(seq - last - 1)
		}
		c.lastSeq[pi] = seq
		w.credit[pi]++
		ts := int64(binary.LittleEndian.Uint64(p))
		if ts >= sp.warmEnd && ts < sp.end {
			w.delivCounted.Add(1)
			w.st.hist.add(now - ts)
		}
		if now >= sp.warmEnd && now < sp.end {
			w.st.ops++
		}
	default:
		w.st.unexpected++
	}
}

func (w *worker) echoSend(c *wconn, now int64) {
	i := c.head + c.count
	if i >= len(c.ring) {
		i -= len(c.ring)
	}
	c.ring[i] = now
	c.count++
	c.wbuf = w.sp.tmpl.appendStamped(c.wbuf, now, 0, 0)
}

// tickPubs sends what the publishers of this worker are due to send and
// returns when the next one is due (MaxInt64: nothing scheduled).
func (w *worker) tickPubs(now int64) int64 {
	sp := w.sp
	next := int64(math.MaxInt64)
	if now >= sp.end {
		return next
	}
	for _, p := range w.pubs {
		c := p.c
		if c.closed {
			continue
		}
		var due int64 = math.MaxInt64
		if sp.rate > 0 {
			if now < p.phase0 {
				next = min(next, p.phase0)
				continue
			}
			due = (now-p.phase0)/sp.interval + 1
			if due-p.slots > sp.burst {
				p.skipped += due - p.slots - sp.burst
				p.slots = due - sp.burst
			}
		}
		sent := false
		for p.slots < due {
			if sp.inflight > 0 && p.outstanding(sp.subs) >= int64(sp.inflight) {
				p.blocked.Store(true)
				if p.outstanding(sp.subs) >= int64(sp.inflight) {
					next = min(next, now+10_000_000) // in case deliveries never come
					break
				}
			}
			if p.blocked.Load() {
				p.blocked.Store(false)
			}
			if len(c.wbuf)-c.woff > maxBacklog {
				break
			}
			now = nowNs()
			p.seq++
			c.wbuf = sp.tmpl.appendStamped(c.wbuf, now, p.idx, p.seq)
			p.sent++
			p.slots++
			if now >= sp.warmEnd && now < sp.end {
				p.sentCounted.Add(1)
			}
			sent = true
		}
		if sent {
			w.flush(c)
		}
		if sp.rate > 0 && p.slots >= due {
			next = min(next, p.phase0+p.slots*sp.interval)
		}
	}
	return next
}

// flushCredits publishes this worker's delivery counts to the publishers
// and wakes the workers of publishers waiting for them.
func (w *worker) flushCredits() {
	for i, n := range w.credit {
		if n == 0 {
			continue
		}
		w.credit[i] = 0
		p := w.sp.pubs[i]
		p.delivered.Add(n)
		if p.blocked.Load() && p.w != w {
			p.w.wake()
		}
	}
}

// flush writes the connection's write buffer; what the socket does not take
// waits for EPOLLOUT.
func (w *worker) flush(c *wconn) {
	for c.woff < len(c.wbuf) {
		n, err := unix.Write(c.fd, c.wbuf[c.woff:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				if c.woff > 0 && c.woff >= len(c.wbuf)/2 {
					m := copy(c.wbuf, c.wbuf[c.woff:])
					c.wbuf = c.wbuf[:m]
					c.woff = 0
				}
				w.arm(c, true)
				return
			}
			w.lose(c, errClass(err))
			return
		}
		c.woff += n
	}
	c.wbuf = c.wbuf[:0]
	c.woff = 0
	if c.outArmed {
		w.arm(c, false)
	}
}

func (w *worker) arm(c *wconn, out bool) {
	if c.outArmed == out {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.idx}
	if out {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		w.lose(c, "epoll mod: "+err.Error())
		return
	}
	c.outArmed = out
}

// fail counts an error and closes the connection.
func (w *worker) fail(c *wconn, kind string) {
	if !c.failed {
		c.failed = true
		w.st.addErr(kind)
	}
	w.closeConn(c)
}

// lose handles the end of a connection: expected once we have both sent and
// received a close frame, or while closing; an error otherwise.
func (w *worker) lose(c *wconn, kind string) {
	if !w.closing && !c.failed && !(c.closeSent && c.gotClose) {
		c.failed = true
		w.st.addErr(kind)
	}
	w.closeConn(c)
}

func (w *worker) closeConn(c *wconn) {
	if c.closed {
		return
	}
	c.closed = true
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	c.partial = nil
	c.wbuf = nil
	w.live.Add(-1)
}

func (w *worker) sendClose(c *wconn) {
	if c.closeSent {
		return
	}
	c.wbuf = appendClose(c.wbuf, ws.StatusNormalClosure, w.sp.key)
	c.closeSent = true
	w.flush(c)
}

func (w *worker) beginClose() {
	w.closing = true
	for _, c := range w.conns {
		if !c.closed {
			w.sendClose(c)
		}
	}
}

func (w *worker) closeAll() {
	for _, c := range w.conns {
		if !c.closed {
			w.closeConn(c)
		}
	}
	w.mu.Lock()
	for _, x := range w.incoming {
		unix.Close(x.rc.fd)
	}
	w.incoming = nil
	w.mu.Unlock()
	unix.Close(w.epfd)
	unix.Close(w.evfd)
}

// measure starts e, waits out the warm-up, and samples the server's CPU
// and RSS (every -pid, and -broker-pid on its own) and this process's CPU
// over the window [warmEnd, end). It returns the window's length, shorter
// when ctx ends it first.
func (c *common) measure(ctx context.Context, e *engine, cfg *config, warmEnd, end int64) time.Duration {
	e.start()
	_ = sleepUntil(ctx, warmEnd)
	if cfg.onWindow != nil {
		cfg.onWindow()
	}
	srv := startServerSampler(cfg.pids)
	var brk *serverSampler
	if cfg.brokerPID > 0 {
		brk = startServerSampler([]int{cfg.brokerPID})
	}
	cl := startClientSampler()
	mach := startMachineSampler()
	_ = sleepUntil(ctx, end)
	window := time.Duration(min(nowNs(), end) - warmEnd)
	c.serverStats = srv.finish()
	if brk != nil {
		c.Broker = brk.finish()
	}
	c.clientStats = cl.finish()
	ours := c.clientStats.CPUSec
	if c.serverStats != nil {
		ours += c.serverStats.CPUSec
	}
	if c.Broker != nil {
		ours += c.Broker.CPUSec
	}
	c.machineStats = mach.finish(ours)
	return window
}
