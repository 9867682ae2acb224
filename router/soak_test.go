//go:build soak

package router_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// The soak test churns connections against a full node (Lua chat script,
// epoll reader, heartbeats, slow-consumer policy) for a while and then
// checks that the process comes back to where it started: goroutines,
// file descriptors and live heap. Run it with
//
//	go test -tags soak -run TestSoak -v -count=1 ./router/ -soak.duration=60s
var (
	soakDuration = flag.Duration("soak.duration", 20*time.Second, "how long the soak test churns connections")
	soakClients  = flag.Int("soak.clients", 200, "concurrent soak clients")
)

// Settings of the node under soak. Small limits and timeouts make every
// defence fire within a session: a 64 KiB message limit (oversized frames
// close 1009), a 128 KiB write queue (slow consumers close 1008), a 1 s
// handshake timeout (abandoned handshakes are dropped), 1 s/3 s heartbeats
// (silent clients are pinged, then dropped 1001).
const soakConfig = `
[server]
max_message_size = "64KiB"
write_queue = "128KiB"
handshake_timeout = "1s"
write_timeout = "1s"

[heartbeat]
interval = "1s"
timeout = "3s"

[[routes]]
path = "/chat/{room}"
script = "chat.lua"
`

// A chat room that also echoes: every message goes to the other members
// and back to its sender, same kind. Senders verify their echo; every
// client verifies what others broadcast.
const soakScript = `
local M = {}
function M.on_open(conn) conn:join(conn.params.room) end
function M.on_message(conn, data, kind)
  ws.broadcast(conn.params.room, data, { except = conn, kind = kind })
  conn:send(data, kind)
end
return M
`

const (
	soakMaxMessage  = 64 << 10
	soakHandshakeTO = time.Second
	soakHeartbeatTO = 3 * time.Second
	soakOpTimeout   = 5 * time.Second  // one read or write by a client
	soakSessionMax  = 15 * time.Second // one client session, all told
)

// Tolerances for "back to baseline" once every client is gone:
//   - goroutines <= baseline+5: the node's own goroutines (lanes, poll
//     workers, sweeper, watcher) are fixed; a connection leaves none
//     behind. 5 absorbs runtime and net/http stragglers (a keep-alive
//     conn goroutine ending, the timer of a last flush);
//   - descriptors <= baseline+5: each connection holds one socket;
//     a leak of one per thousand sessions would show as hundreds;
//   - live heap (HeapAlloc after two GCs, which also empty sync.Pools)
//     <= baseline*1.5 + 4 MiB: the connection table's chunks, lane queues
//     grown by a burst and the Lua VMs' registries may stay larger than
//     after the warm-up, by a bounded amount that does not grow with the
//     number of sessions; per-connection state left behind would (tens of
//     thousands of sessions, kilobytes each).
const (
	soakGoroutineSlack = 5
	soakFDSlack        = 5
	soakHeapFactor     = 1.5
	soakHeapSlack      = 4 << 20
)

// TestSoak runs -soak.clients client goroutines against one node for
// -soak.duration (after a warm-up of up to 3s), each running sessions back
// to back, picked at random with these weights:
//
//	40 valid:     connect to /chat/r<n>, exchange 1-20 text and binary
//	              messages (0 B-64 KiB, up to 4 in flight, one in ten
//	              fragmented around a ping), verify every echo and every
//	              broadcast from others (checksummed), then close 1000 or
//	              drop the socket;
//	20 invalid:   bad UTF-8 (1007), an unmasked frame (1002), a frame over
//	              the limit (1009), a reserved opcode (1002) — each must
//	              get its close code and then lose its TCP connection — or
//	              random garbage (any end is fine);
//	12 kill:      half a frame, then FIN, RST, or silence until the
//	              heartbeat timeout drops it;
//	12 abandon:   part of a request head (or nothing), then leave, or wait
//	              for the handshake timeout to drop it without a response;
//	 8 slow:      a flooder in a room of its own that writes 1 MiB and
//	              never reads (closed by the slow-consumer policy or the
//	              write timeout), or a passive member of a busy room that
//	              neither reads nor writes for 0.5-4s.
//
// Every read, write and session has a deadline. After the last client,
// the server must reach zero connections and the process its baseline
// (see the tolerances above); the figures are logged.
func TestSoak(t *testing.T) {
	if *soakClients < 1 || *soakDuration <= 0 {
		t.Fatal("need -soak.clients >= 1 and -soak.duration > 0")
	}
	logs := &soakLog{}
	s := moontest.Start(t, moontest.Files(soakConfig, "scripts/chat.lua", soakScript),
		func(rc *router.Config) {
			// The router's access log (a line per connection) would grow
			// moontest's in-memory log without bound and read as a heap
			// leak; count its records instead.
			rc.Logger = slog.New(logs)
		})
	addr := s.Addr()
	clients := *soakClients
	rooms := max(1, clients/10)

	// Warm-up: the same mix, so that pools, the connection table and the
	// Lua VMs reach their working size before the baseline is taken.
	warm := min(3*time.Second, max(*soakDuration/5, time.Second))
	warmStats := &soakStats{}
	warmErrs := &soakErrors{}
	if !runSoakClients(t, addr, clients, rooms, warm, warmStats, warmErrs, 1) {
		return
	}
	if !waitServerIdle(t, s, "after the warm-up") {
		return
	}
	base := settle(func(m soakMeasure) bool { return false }, 2*time.Second)
	t.Logf("warm-up %v: %d sessions; baseline: %s", warm, warmStats.sessions.Load(), base)

	// The soak proper, with a sampler for the peaks.
	st := &soakStats{}
	errs := &soakErrors{}
	var peak soakPeak
	samplerDone := make(chan struct{})
	samplerStop := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-samplerStop:
				return
			case <-tick.C:
				peak.update(measure(false), s.Router.Stats().Connections)
			}
		}
	}()
	started := time.Now()
	finished := runSoakClients(t, addr, clients, rooms, *soakDuration, st, errs, 2)
	close(samplerStop)
	<-samplerDone
	if !finished {
		return
	}
	elapsed := time.Since(started)

	// Everyone is gone: the server must drop to zero connections, then the
	// process back to the baseline.
	idle := waitServerIdle(t, s, "after the soak")
	within := func(m soakMeasure) bool {
		return m.goroutines <= base.goroutines+soakGoroutineSlack &&
			m.fds <= base.fds+soakFDSlack &&
			float64(m.heapAlloc) <= float64(base.heapAlloc)*soakHeapFactor+soakHeapSlack
	}
	settleStart := time.Now()
	final := settle(within, 20*time.Second)
	settleTook := time.Since(settleStart)

	srvStats := s.Router.Stats()
	t.Logf("soak: %d clients, %d rooms, %v (sessions stop starting at the deadline; the last ended %v after it)",
		clients, rooms, *soakDuration, (elapsed - *soakDuration).Round(time.Millisecond))
	st.report(t)
	t.Logf("server (warm-up included): handshakes ok %d, refused %v, closes by code %v, protocol errors %d, slow-consumer closes %d, queue drops %d, messages in/out %d/%d, broadcasts %d (deliveries %d)",
		srvStats.HandshakesOK, srvStats.HandshakesRefused, sortedCodes(srvStats.Closes), srvStats.ProtocolErrors,
		srvStats.SlowCloses, srvStats.QueueDrops, srvStats.MessagesIn, srvStats.MessagesOut,
		srvStats.Broadcasts, srvStats.Fanout)
	t.Logf("server log: %s", logs.summary())
	t.Logf("peak: %d connections, %d goroutines, %d fds, heap in use %s (alloc %s)",
		peak.conns, peak.goroutines, peak.fds, mib(peak.heapInuse), mib(peak.heapAlloc))
	t.Logf("baseline: %s", base)
	t.Logf("final:    %s (settled in %v)", final, settleTook.Round(time.Millisecond))
	t.Logf("limits:   goroutines <= %d, fds <= %d, heap alloc <= %s",
		base.goroutines+soakGoroutineSlack, base.fds+soakFDSlack,
		mib(uint64(float64(base.heapAlloc)*soakHeapFactor+soakHeapSlack)))

	if n := warmErrs.count.Load(); n > 0 {
		t.Errorf("%d client-side failures during the warm-up; the first:\n  %s", n, strings.Join(warmErrs.first(), "\n  "))
	}
	if n := errs.count.Load(); n > 0 {
		t.Errorf("%d client-side failures; the first:\n  %s", n, strings.Join(errs.first(), "\n  "))
	}
	if st.sessions.Load() == 0 || st.messagesVerified.Load() == 0 {
		t.Errorf("the soak ran no sessions or verified no messages")
	}
	if !idle {
		return // already reported
	}
	if !within(final) {
		var dump bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("the process did not return to its baseline within 20s: final %s, baseline %s\ngoroutines:\n%s",
			final, base, dump.String())
	}
}

// runSoakClients runs clients goroutines, each running sessions back to
// back until d has passed. It reports false (having failed the test) if
// they do not all end within a bound.
func runSoakClients(t *testing.T, addr string, clients, rooms int, d time.Duration, st *soakStats, errs *soakErrors, seed uint64) bool {
	t.Helper()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	var nextSID atomic.Uint64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for time.Now().Before(end) {
				sc := &soakClient{
					addr: addr, rooms: rooms, rng: rng, st: st, errs: errs,
					sid:      nextSID.Add(1)<<8 | seed,
					deadline: time.Now().Add(soakSessionMax),
				}
				sc.run()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d + soakSessionMax + 30*time.Second):
		var dump bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
		t.Errorf("soak clients did not finish: a client or the server hangs\n%s", dump.String())
		return false
	}
}

func waitServerIdle(t *testing.T, s *moontest.Server, when string) bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.Router.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			var dump bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
			t.Errorf("%s: the server still holds %d connections 20s after the last client left\n%s",
				when, s.Router.Stats().Connections, dump.String())
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// soakMeasure is one reading of the process.
type soakMeasure struct {
	goroutines, fds      int
	heapAlloc, heapInuse uint64
}

func (m soakMeasure) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap alloc %s, heap in use %s",
		m.goroutines, m.fds, mib(m.heapAlloc), mib(m.heapInuse))
}

// measure reads the process, after collecting garbage when gc is set
// (twice: the first GC moves sync.Pool contents to the victim cache, the
// second frees them).
func measure(gc bool) soakMeasure {
	if gc {
		runtime.GC()
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakMeasure{
		goroutines: runtime.NumGoroutine(),
		fds:        countFDs(),
		heapAlloc:  ms.HeapAlloc,
		heapInuse:  ms.HeapInuse,
	}
}

// settle measures until ok holds or d passes, and returns the last
// measure. With an ok that never holds it waits d for stragglers and
// returns the quietest reading.
func settle(ok func(soakMeasure) bool, d time.Duration) soakMeasure {
	deadline := time.Now().Add(d)
	best := measure(true)
	for !ok(best) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		m := measure(true)
		if ok(m) || m.goroutines+m.fds < best.goroutines+best.fds ||
			m.goroutines+m.fds == best.goroutines+best.fds && m.heapAlloc < best.heapAlloc {
			best = m
		}
	}
	return best
}

type soakPeak struct {
	goroutines, fds      int
	heapAlloc, heapInuse uint64
	conns                int64
}

func (p *soakPeak) update(m soakMeasure, conns int64) {
	p.goroutines = max(p.goroutines, m.goroutines)
	p.fds = max(p.fds, m.fds)
	p.heapAlloc = max(p.heapAlloc, m.heapAlloc)
	p.heapInuse = max(p.heapInuse, m.heapInuse)
	p.conns = max(p.conns, conns)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func sortedCodes(m map[int]int64) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d:%d", k, m[k])
	}
	return "[" + b.String() + "]"
}

// soakStats are the client-side figures.
type soakStats struct {
	sessions, dials, dialErrors atomic.Int64

	valid, messagesSent, messagesVerified, bytesVerified  atomic.Int64
	fragmentedVerified, pongsVerified, broadcastsVerified atomic.Int64
	cleanCloses, abruptCloses, validClosedSlow            atomic.Int64

	invalid       atomic.Int64
	invalidByKind [soakInvalidKinds]atomic.Int64
	invalidCoded  atomic.Int64 // closed with the expected code
	garbageOpen   atomic.Int64 // garbage the server is still waiting to complete

	kills, killsRST, stalls, stallsDropped atomic.Int64

	abandoned, abandonedDropped atomic.Int64

	floods, floodsClosed, floodsKeptUp                     atomic.Int64
	passive, passiveHeartbeat, passiveSlow, passiveDropped atomic.Int64
}

func (st *soakStats) report(t *testing.T) {
	t.Helper()
	t.Logf("connections made: %d dials (%d failed), %d sessions", st.dials.Load(), st.dialErrors.Load(), st.sessions.Load())
	t.Logf("valid sessions: %d; messages sent %d, echoes verified %d (%s), fragmented %d, pongs %d, broadcasts from others verified %d; clean closes %d, abrupt %d, closed 1008 as slow %d",
		st.valid.Load(), st.messagesSent.Load(), st.messagesVerified.Load(), mib(uint64(st.bytesVerified.Load())),
		st.fragmentedVerified.Load(), st.pongsVerified.Load(), st.broadcastsVerified.Load(),
		st.cleanCloses.Load(), st.abruptCloses.Load(), st.validClosedSlow.Load())
	var kinds []string
	for k := range soakInvalidKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", soakInvalidNames[k], st.invalidByKind[k].Load()))
	}
	t.Logf("invalid sessions: %d (%s); closed with the expected code %d; garbage left pending %d",
		st.invalid.Load(), strings.Join(kinds, ", "), st.invalidCoded.Load(), st.garbageOpen.Load())
	t.Logf("killed mid-frame: %d (%d with RST), stalled mid-frame %d (dropped by the server %d)",
		st.kills.Load(), st.killsRST.Load(), st.stalls.Load(), st.stallsDropped.Load())
	t.Logf("abandoned handshakes: %d (%d waited for and dropped by the server)", st.abandoned.Load(), st.abandonedDropped.Load())
	t.Logf("slow consumers: %d flooders (%d closed by the server, %d kept up with), %d passive (closed by the server: %d heartbeat timeout, %d slow consumer, %d dropped without a close frame; the rest left first)",
		st.floods.Load(), st.floodsClosed.Load(), st.floodsKeptUp.Load(), st.passive.Load(),
		st.passiveHeartbeat.Load(), st.passiveSlow.Load(), st.passiveDropped.Load())
}

// soakErrors collects client-side failures.
type soakErrors struct {
	count atomic.Int64
	mu    sync.Mutex
	list  []string
	dump  string // goroutines at the first failure
}

func (e *soakErrors) add(format string, args ...any) {
	if e.count.Add(1) == 1 {
		// The state of every goroutine at the first failure, for the
		// diagnosis (a stall shows as goroutines blocked in one place).
		var dump bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&dump, 2)
		name := filepath.Join(os.TempDir(), fmt.Sprintf("moonwire-soak-goroutines-%d.txt", os.Getpid()))
		if os.WriteFile(name, dump.Bytes(), 0o644) == nil {
			e.dump = name
		}
	}
	e.mu.Lock()
	if len(e.list) < 20 {
		e.list = append(e.list, fmt.Sprintf(format, args...))
	}
	e.mu.Unlock()
}

func (e *soakErrors) first() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]string(nil), e.list...)
	if e.dump != "" {
		out = append(out, "goroutines at the first failure: "+e.dump)
	}
	return out
}

// soakLog is a slog.Handler that counts the router's records by level and
// keeps the last few warnings and errors.
type soakLog struct {
	mu     sync.Mutex
	counts map[slog.Level]int
	last   []string
}

func (l *soakLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }

func (l *soakLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[slog.Level]int{}
	}
	l.counts[r.Level]++
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key != "stack" {
				b.WriteString(" " + a.String())
			}
			return true
		})
		if l.last = append(l.last, b.String()); len(l.last) > 10 {
			l.last = l.last[1:]
		}
	}
	return nil
}

func (l *soakLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *soakLog) WithGroup(string) slog.Handler      { return l }

func (l *soakLog) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprintf("%d info, %d warn, %d error records", l.counts[slog.LevelInfo], l.counts[slog.LevelWarn], l.counts[slog.LevelError])
	if len(l.last) > 0 {
		s += "; last warnings/errors:\n  " + strings.Join(l.last, "\n  ")
	}
	return s
}

// Invalid traffic, with the close code each must get.
const (
	invalidUTF8 = iota
	invalidUnmasked
	invalidOversized
	invalidReservedOp
	invalidGarbage
	soakInvalidKinds
)

var soakInvalidNames = [soakInvalidKinds]string{"bad UTF-8", "unmasked", "oversized", "reserved opcode", "garbage"}

var soakInvalidCodes = [soakInvalidKinds]int{1007, 1002, 1009, 1002, 0}

// soakClient is one session.
type soakClient struct {
	addr     string
	rooms    int
	rng      *rand.Rand
	st       *soakStats
	errs     *soakErrors
	sid      uint64
	deadline time.Time
	kind     string

	nc  net.Conn
	br  *bufio.Reader
	seq uint32

	// A well-behaved client reads while it writes: a reader goroutine
	// (started by startReader) answers pings and queues every other frame
	// for the session, and writes go through wmu.
	wmu       sync.Mutex
	frames    chan soakFrame
	done      chan struct{}
	readerWG  sync.WaitGroup
	noPong    atomic.Bool // half a frame is out: a pong would land inside it
	readerErr error       // what ended the reader, once nextFrame saw it

	pending []sentMsg // sent, echo not yet seen
	pings   [][]byte  // sent, pong not yet seen
	frag    []byte    // a message being reassembled
	fragOp  ws.OpCode
}

// soakFrame is a frame the reader goroutine read, or the error that
// ended it (the last one).
type soakFrame struct {
	h   ws.Header
	p   []byte
	err error
}

type sentMsg struct {
	op      ws.OpCode
	payload []byte
	frag    bool
}

// Behaviours and their weights.
var soakMix = []struct {
	weight int
	name   string
	run    func(*soakClient)
}{
	{40, "valid", (*soakClient).valid},
	{20, "invalid", (*soakClient).invalidTraffic},
	{12, "kill", (*soakClient).killMidFrame},
	{12, "abandon", (*soakClient).abandonHandshake},
	{8, "slow", (*soakClient).slowConsumer},
}

func (c *soakClient) run() {
	c.st.sessions.Add(1)
	total := 0
	for _, m := range soakMix {
		total += m.weight
	}
	n := c.rng.IntN(total)
	for _, m := range soakMix {
		if n < m.weight {
			c.kind = m.name
			m.run(c)
			break
		}
		n -= m.weight
	}
	if c.nc != nil {
		_ = c.nc.Close()
	}
	if c.done != nil {
		close(c.done)
		c.readerWG.Wait()
	}
}

// startReader starts the session's reader goroutine.
func (c *soakClient) startReader() {
	ch, done := make(chan soakFrame, 1024), make(chan struct{})
	c.frames, c.done = ch, done
	// The session's own deadline bounds the reader; run() closes the
	// socket before waiting for it.
	_ = c.nc.SetReadDeadline(c.deadline.Add(time.Second))
	c.readerWG.Add(1)
	go func() {
		defer c.readerWG.Done()
		deliver := func(f soakFrame) bool {
			select {
			case ch <- f:
				return true
			case <-done:
				return false
			}
		}
		for {
			h, err := ws.ReadHeader(c.br)
			if err == nil && h.Length > soakMaxMessage+16 {
				err = fmt.Errorf("server frame of %d bytes exceeds any message", h.Length)
			}
			var p []byte
			if err == nil {
				p = make([]byte, h.Length)
				_, err = io.ReadFull(c.br, p)
			}
			if err != nil {
				deliver(soakFrame{err: err})
				return
			}
			if h.OpCode == ws.OpPing && !c.noPong.Load() {
				_ = c.writeUntil(c.pongFrame(p), time.Now().Add(soakOpTimeout))
				continue
			}
			if !deliver(soakFrame{h: h, p: p}) {
				return
			}
		}
	}()
}

// nextFrame returns the next frame from the reader, or an error when none
// came within the op deadline.
func (c *soakClient) nextFrame() (ws.Header, []byte, error) {
	if c.readerErr != nil {
		return ws.Header{}, nil, c.readerErr // the reader is gone
	}
	t := time.NewTimer(time.Until(c.opDeadline()))
	defer t.Stop()
	select {
	case f := <-c.frames:
		if f.err != nil {
			c.readerErr = f.err
			return ws.Header{}, nil, f.err
		}
		return f.h, f.p, nil
	case <-t.C:
		return ws.Header{}, nil, errSoakTimeout
	}
}

var errSoakTimeout = timeoutError{}

// timeoutError is a net.Error timeout, like a read deadline's.
type timeoutError struct{}

func (timeoutError) Error() string   { return "no frame from the server within the deadline" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func (c *soakClient) fail(format string, args ...any) {
	c.errs.add("session %x (%s): "+format, append([]any{c.sid, c.kind}, args...)...)
}

func (c *soakClient) room() string { return "r" + strconv.Itoa(c.rng.IntN(c.rooms)) }

// opDeadline is the deadline of the next read or write.
func (c *soakClient) opDeadline() time.Time {
	d := time.Now().Add(soakOpTimeout)
	if d.After(c.deadline) {
		return c.deadline
	}
	return d
}

// dial opens a WebSocket connection to /chat/<room>.
func (c *soakClient) dial(room string) bool {
	c.st.dials.Add(1)
	ctx, cancel := context.WithDeadline(context.Background(), c.opDeadline())
	defer cancel()
	var status int
	d := ws.Dialer{OnStatusError: func(s int, _ []byte, _ io.Reader) { status = s }}
	start := time.Now()
	nc, br, _, err := d.Dial(ctx, "ws://"+c.addr+"/chat/"+room)
	if err != nil {
		c.st.dialErrors.Add(1)
		c.fail("dial: %v (status %d) after %v", err, status, time.Since(start).Round(time.Millisecond))
		return false
	}
	c.nc = nc
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	c.br = br
	return true
}

// frame encodes one frame, masked unless unmasked is set.
func (c *soakClient) frame(op ws.OpCode, fin bool, p []byte, unmasked bool) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}
	q := p
	if !unmasked {
		h.Masked = true
		binary.LittleEndian.PutUint32(h.Mask[:], c.rng.Uint32())
		q = append([]byte(nil), p...)
		ws.Cipher(q, h.Mask, 0)
	}
	var b bytes.Buffer
	b.Grow(ws.HeaderSize(h) + len(q))
	_ = ws.WriteHeader(&b, h)
	b.Write(q)
	return b.Bytes()
}

func (c *soakClient) write(b []byte) error { return c.writeUntil(b, c.opDeadline()) }

func (c *soakClient) writeUntil(b []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(deadline)
	_, err := c.nc.Write(b)
	return err
}

// pongFrame answers a ping, from the reader goroutine (which must not use
// the session's rng).
func (c *soakClient) pongFrame(p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpPong, Length: int64(len(p)), Masked: true}
	binary.LittleEndian.PutUint32(h.Mask[:], uint32(time.Now().UnixNano()))
	q := append([]byte(nil), p...)
	ws.Cipher(q, h.Mask, 0)
	var b bytes.Buffer
	_ = ws.WriteHeader(&b, h)
	b.Write(q)
	return b.Bytes()
}

// message makes a verifiable message: text "s<sid>.<seq>.<crc>:<body>"
// with a UTF-8 body, or binary magic|sid|seq|crc|body.
func (c *soakClient) message() (ws.OpCode, []byte) {
	c.seq++
	var n int
	switch r := c.rng.IntN(100); {
	case r < 70:
		n = c.rng.IntN(200)
	case r < 95:
		n = 200 + c.rng.IntN(8<<10)
	default:
		n = 8<<10 + c.rng.IntN(soakMaxMessage-(8<<10)-64)
	}
	if c.rng.IntN(2) == 0 {
		body := make([]byte, 0, n)
		for len(body) < n {
			switch c.rng.IntN(8) {
			case 0:
				body = append(body, "é"...)
			case 1:
				body = append(body, "世"...)
			case 2:
				body = append(body, "🙂"...)
			default:
				body = append(body, byte('a'+c.rng.IntN(26)))
			}
		}
		head := fmt.Sprintf("s%x.%d.%08x:", c.sid, c.seq, crc32.ChecksumIEEE(body))
		return ws.OpText, append([]byte(head), body...)
	}
	b := make([]byte, 20+n)
	copy(b, soakMagic)
	binary.BigEndian.PutUint64(b[4:], c.sid)
	binary.BigEndian.PutUint32(b[12:], c.seq)
	for i := 20; i < len(b); i++ {
		b[i] = byte(c.rng.Uint32())
	}
	binary.BigEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[20:]))
	return ws.OpBinary, b
}

var soakMagic = []byte{0xb1, 0x0a, 0x5a, 0x0c}

// owner parses a message's sender and checks its checksum.
func owner(op ws.OpCode, p []byte) (sid uint64, ok bool) {
	switch op {
	case ws.OpText:
		head, body, found := bytes.Cut(p, []byte(":"))
		if !found || len(head) < 2 || head[0] != 's' {
			return 0, false
		}
		parts := strings.Split(string(head[1:]), ".")
		if len(parts) != 3 {
			return 0, false
		}
		sid, err1 := strconv.ParseUint(parts[0], 16, 64)
		sum, err2 := strconv.ParseUint(parts[2], 16, 32)
		if err1 != nil || err2 != nil || uint32(sum) != crc32.ChecksumIEEE(body) {
			return 0, false
		}
		return sid, true
	case ws.OpBinary:
		if len(p) < 20 || !bytes.Equal(p[:4], soakMagic) ||
			binary.BigEndian.Uint32(p[16:]) != crc32.ChecksumIEEE(p[20:]) {
			return 0, false
		}
		return binary.BigEndian.Uint64(p[4:]), true
	}
	return 0, false
}

// next returns the next data message or close frame from the server,
// answering pings and checking pongs and broadcasts on the way. Data
// messages from other clients are verified and skipped unless all is set.
func (c *soakClient) next(all bool) (op ws.OpCode, p []byte, err error) {
	for {
		h, p, err := c.nextFrame()
		if err != nil {
			return 0, nil, err
		}
		if h.Masked {
			return 0, nil, errors.New("server sent a masked frame")
		}
		switch h.OpCode {
		case ws.OpPing:
			continue // not answered: half a frame is out
		case ws.OpPong:
			if len(c.pings) == 0 || !bytes.Equal(c.pings[0], p) {
				return 0, nil, fmt.Errorf("unexpected pong %q", p)
			}
			c.pings = c.pings[1:]
			c.st.pongsVerified.Add(1)
			continue
		case ws.OpClose:
			return ws.OpClose, p, nil
		case ws.OpText, ws.OpBinary:
			if c.frag != nil {
				return 0, nil, errors.New("server started a message inside another")
			}
			if !h.Fin {
				c.frag, c.fragOp = p, h.OpCode
				continue
			}
		case ws.OpContinuation:
			if c.frag == nil {
				return 0, nil, errors.New("server sent a stray continuation")
			}
			c.frag = append(c.frag, p...)
			if !h.Fin {
				continue
			}
			p, h.OpCode, c.frag = c.frag, c.fragOp, nil
		default:
			return 0, nil, fmt.Errorf("server sent opcode %v", h.OpCode)
		}
		sid, ok := owner(h.OpCode, p)
		if !ok {
			return 0, nil, fmt.Errorf("corrupt %v message of %d bytes: %q", h.OpCode, len(p), truncate(p, 80))
		}
		if sid != c.sid {
			c.st.broadcastsVerified.Add(1)
			if !all {
				continue
			}
		}
		return h.OpCode, p, nil
	}
}

// awaitEchoes reads until every pending message has come back. It reports
// false when the session ended (and says why, if that is a failure).
func (c *soakClient) awaitEchoes() bool {
	for len(c.pending) > 0 || len(c.pings) > 0 {
		op, p, err := c.next(false)
		if err != nil {
			c.fail("waiting for %d echoes and %d pongs: %v", len(c.pending), len(c.pings), err)
			return false
		}
		if op == ws.OpClose {
			code, reason := closeCode(p)
			if code == 1008 && reason == "slow consumer" {
				// Legitimate: a busy room outran this client.
				c.st.validClosedSlow.Add(1)
				return false
			}
			c.fail("closed %d %q while waiting for echoes", code, reason)
			return false
		}
		want := c.pending[0]
		if op != want.op || !bytes.Equal(p, want.payload) {
			c.fail("echo mismatch: got %v %d bytes %q, want %v %d bytes %q",
				op, len(p), truncate(p, 40), want.op, len(want.payload), truncate(want.payload, 40))
			return false
		}
		c.pending = c.pending[1:]
		c.st.messagesVerified.Add(1)
		c.st.bytesVerified.Add(int64(len(p)))
		if want.frag {
			c.st.fragmentedVerified.Add(1)
		}
	}
	return true
}

// writeFailed handles a write error of a well-behaved client: the server
// may have closed the connection as a slow consumer (legitimate: this
// client fell behind reading), which the close frame still in the socket
// tells; anything else is a failure.
func (c *soakClient) writeFailed(what string, err error) {
	c.pending, c.pings = nil, nil
	c.deadline = time.Now().Add(time.Second)
	var frames []string
	for {
		op, p, rerr := c.next(true)
		if rerr != nil {
			c.fail("%s: %v; then read %v after frames %v", what, err, rerr, frames)
			return
		}
		if op == ws.OpClose {
			code, reason := closeCode(p)
			if code == 1008 && reason == "slow consumer" {
				c.st.validClosedSlow.Add(1)
				return
			}
			c.fail("%s: %v; the server had closed %d %q", what, err, code, reason)
			return
		}
		frames = append(frames, fmt.Sprintf("%v/%d", op, len(p)))
	}
}

func closeCode(p []byte) (int, string) {
	if len(p) < 2 {
		return 1005, ""
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:])
}

// send sends one message, sometimes fragmented with a ping in between.
func (c *soakClient) send(op ws.OpCode, p []byte) error {
	c.st.messagesSent.Add(1)
	frag := len(p) > 8 && c.rng.IntN(10) == 0
	c.pending = append(c.pending, sentMsg{op: op, payload: p, frag: frag})
	if !frag {
		return c.write(c.frame(op, true, p, false))
	}
	cut := 1 + c.rng.IntN(len(p)-1)
	if op == ws.OpText {
		for cut < len(p) && p[cut]&0xc0 == 0x80 {
			cut++ // fine either way; keep most cuts on rune boundaries
		}
	}
	ping := []byte(fmt.Sprintf("ping %d", c.seq))
	c.pings = append(c.pings, ping)
	var b []byte
	b = append(b, c.frame(op, false, p[:cut], false)...)
	b = append(b, c.frame(ws.OpPing, true, ping, false)...)
	b = append(b, c.frame(ws.OpContinuation, true, p[cut:], false)...)
	return c.write(b)
}

// exchange sends n messages, up to 4 in flight, and verifies the echoes.
func (c *soakClient) exchange(n int) bool {
	for n > 0 {
		burst := min(n, 1+c.rng.IntN(4))
		for range burst {
			op, p := c.message()
			if err := c.send(op, p); err != nil {
				c.writeFailed("send", err)
				return false
			}
		}
		n -= burst
		if !c.awaitEchoes() {
			return false
		}
	}
	return true
}

// valid: connect, exchange messages, close cleanly or drop the TCP
// connection.
func (c *soakClient) valid() {
	c.st.valid.Add(1)
	if !c.dial(c.room()) {
		return
	}
	c.startReader()
	if !c.exchange(1 + c.rng.IntN(20)) {
		return
	}
	if c.rng.IntN(10) < 3 {
		c.st.abruptCloses.Add(1)
		return
	}
	if err := c.write(c.frame(ws.OpClose, true, []byte{0x03, 0xe8}, false)); err != nil {
		c.writeFailed("close", err)
		return
	}
	for {
		op, p, err := c.next(false)
		if err != nil {
			c.fail("waiting for the close reply: %v", err)
			return
		}
		if op == ws.OpClose {
			if code, reason := closeCode(p); code != 1000 {
				if code == 1008 && reason == "slow consumer" {
					c.st.validClosedSlow.Add(1)
					return
				}
				c.fail("close reply %d %q, want 1000", code, reason)
				return
			}
			break
		}
	}
	if !c.expectEOF() {
		c.fail("the server did not end the TCP connection after the closing handshake")
		return
	}
	c.st.cleanCloses.Add(1)
}

// expectEOF reads until the server closes the connection (a reset
// counts), within the op deadline.
func (c *soakClient) expectEOF() bool {
	for {
		_, _, err := c.nextFrame()
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// invalidTraffic: connect, maybe exchange, then break the protocol; the
// server must close with the matching code and end the TCP connection.
func (c *soakClient) invalidTraffic() {
	c.st.invalid.Add(1)
	kind := c.rng.IntN(soakInvalidKinds)
	c.st.invalidByKind[kind].Add(1)
	if !c.dial(c.room()) {
		return
	}
	c.startReader()
	if c.rng.IntN(2) == 0 && !c.exchange(1+c.rng.IntN(3)) {
		return
	}
	var b []byte
	switch kind {
	case invalidUTF8:
		b = c.frame(ws.OpText, true, []byte("ok \xc3\x28 not"), false)
	case invalidUnmasked:
		b = c.frame(ws.OpBinary, true, []byte("unmasked"), true)
	case invalidOversized:
		// The header is enough: the limit is checked before the payload.
		var hb bytes.Buffer
		_ = ws.WriteHeader(&hb, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true,
			Mask: [4]byte{1, 2, 3, 4}, Length: int64(soakMaxMessage + 1 + c.rng.IntN(1<<20))})
		b = append(hb.Bytes(), make([]byte, c.rng.IntN(100))...)
	case invalidReservedOp:
		b = c.frame(ws.OpCode(3+c.rng.IntN(5)), true, []byte("r"), false)
	case invalidGarbage:
		b = make([]byte, 1+c.rng.IntN(300))
		for i := range b {
			b[i] = byte(c.rng.Uint32())
		}
	}
	if err := c.write(b); err != nil && kind != invalidGarbage {
		c.fail("%s: write: %v", soakInvalidNames[kind], err)
		return
	}
	if kind == invalidGarbage {
		// Anything goes, as long as it ends: a close, an EOF, or the
		// server waiting for the rest of a frame the garbage began.
		c.deadline = time.Now().Add(1500 * time.Millisecond)
		for {
			op, _, err := c.next(true)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.st.garbageOpen.Add(1)
				}
				return
			}
			if op == ws.OpClose {
				return
			}
		}
	}
	want := soakInvalidCodes[kind]
	for {
		op, p, err := c.next(false)
		if err != nil {
			c.fail("%s: waiting for close %d: %v", soakInvalidNames[kind], want, err)
			return
		}
		if op != ws.OpClose {
			continue // a late echo
		}
		code, reason := closeCode(p)
		if code != want {
			if code == 1008 && reason == "slow consumer" {
				c.st.validClosedSlow.Add(1)
				return
			}
			c.fail("%s: close %d %q, want %d", soakInvalidNames[kind], code, reason, want)
			return
		}
		break
	}
	// The server fails the connection: no closing handshake, TCP ends.
	if !c.expectEOF() {
		c.fail("%s: the server kept the TCP connection after its close frame", soakInvalidNames[kind])
		return
	}
	c.st.invalidCoded.Add(1)
}

// killMidFrame: connect, maybe exchange, send half a frame, then close the
// socket (FIN or RST) or stall until the server drops the connection for
// silence.
func (c *soakClient) killMidFrame() {
	if !c.dial(c.room()) {
		return
	}
	c.startReader()
	if c.rng.IntN(2) == 0 && !c.exchange(1+c.rng.IntN(3)) {
		return
	}
	op, p := c.message()
	f := c.frame(op, true, p, false)
	c.noPong.Store(true)
	if err := c.write(f[:1+c.rng.IntN(len(f)-1)]); err != nil {
		c.writeFailed("half frame", err)
		return
	}
	switch r := c.rng.IntN(100); {
	case r < 10:
		// Stall: read (without answering pings, which would land inside
		// the half frame) until the server gives up on us.
		c.st.stalls.Add(1)
		start := time.Now()
		c.deadline = time.Now().Add(soakHeartbeatTO + 3*time.Second)
		if !c.expectEOF() {
			c.fail("stalled mid-frame: the server kept the connection %v (heartbeat timeout %v)",
				time.Since(start).Round(time.Millisecond), soakHeartbeatTO)
			return
		}
		c.st.stallsDropped.Add(1)
	case r < 35:
		c.st.kills.Add(1)
		c.st.killsRST.Add(1)
		_ = c.nc.(*net.TCPConn).SetLinger(0)
	default:
		c.st.kills.Add(1)
	}
}

// abandonHandshake: connect and send nothing or part of a request head,
// then leave, or wait for the server to drop us at the handshake timeout.
func (c *soakClient) abandonHandshake() {
	c.st.abandoned.Add(1)
	c.st.dials.Add(1)
	nc, err := net.DialTimeout("tcp", c.addr, soakOpTimeout)
	if err != nil {
		c.st.dialErrors.Add(1)
		c.fail("dial: %v", err)
		return
	}
	c.nc = nc
	head := "GET /chat/" + c.room() + " HTTP/1.1\r\nHost: " + c.addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	part := head[:c.rng.IntN(len(head)-1)] // never the whole head
	if part != "" {
		_ = nc.SetWriteDeadline(c.opDeadline())
		if _, err := nc.Write([]byte(part)); err != nil {
			c.fail("partial head: %v", err)
			return
		}
	}
	if c.rng.IntN(4) != 0 {
		return // leave at once
	}
	// Wait: the server must drop us, without a response, at its deadline.
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(soakHandshakeTO + 2*time.Second))
	b, err := io.ReadAll(nc)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		c.fail("abandoned handshake (%d bytes sent) still open after %v (handshake timeout %v)",
			len(part), time.Since(start).Round(time.Millisecond), soakHandshakeTO)
	case len(b) > 0:
		c.fail("abandoned handshake (%q) answered %q", part, truncate(b, 80))
	default:
		c.st.abandonedDropped.Add(1)
	}
}

// slowConsumer: a flooder in a room of its own sends much more than it
// reads (a small receive buffer, no reads) until the server closes it; a
// passive client sits in a shared room without reading or sending until
// it leaves or the server drops it.
func (c *soakClient) slowConsumer() {
	if c.rng.IntN(2) == 0 {
		c.st.passive.Add(1)
		if !c.dial(c.room()) {
			return
		}
		_ = c.nc.(*net.TCPConn).SetReadBuffer(4096)
		time.Sleep(time.Duration(500+c.rng.IntN(3500)) * time.Millisecond)
		// Now read what piled up (verifying it) to learn our fate: the
		// heartbeat timeout (3s of silence from us) closes 1001, the
		// slow-consumer policy 1008, the write timeout just drops. A
		// small receive window drains slowly (TCP persist timer), hence
		// the long window.
		_ = c.nc.SetReadDeadline(time.Now().Add(4 * time.Second))
		for {
			h, err := ws.ReadHeader(c.br)
			var p []byte
			if err == nil {
				p = make([]byte, min(h.Length, soakMaxMessage+16))
				_, err = io.ReadFull(c.br, p)
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return // still open: we leave
			case err != nil:
				c.st.passiveDropped.Add(1)
				return
			case h.OpCode == ws.OpClose:
				code, reason := closeCode(p)
				switch {
				case code == 1001 && reason == "heartbeat timeout":
					c.st.passiveHeartbeat.Add(1)
				case code == 1008 && reason == "slow consumer":
					c.st.passiveSlow.Add(1)
				default:
					c.fail("passive: closed %d %q", code, reason)
				}
				return
			case h.OpCode == ws.OpText || h.OpCode == ws.OpBinary:
				if _, ok := owner(h.OpCode, p); !ok {
					c.fail("passive: corrupt %v message of %d bytes", h.OpCode, len(p))
					return
				}
			}
		}
	}
	c.st.floods.Add(1)
	if !c.dial(fmt.Sprintf("flood-%x", c.sid)) {
		return
	}
	_ = c.nc.(*net.TCPConn).SetReadBuffer(4096)
	const floodMessages = 128
	p := make([]byte, 8<<10)
	for range floodMessages { // 1 MiB of echoes against a 128 KiB write queue
		if err := c.write(c.frame(ws.OpBinary, true, p, false)); err != nil {
			break // the server closed us
		}
	}
	// Now read: the server must have closed (1008 "slow consumer", or the
	// TCP connection after its write timeout) or must close soon — unless
	// it kept up after all: the kernel's send buffer on loopback grows to
	// megabytes, and when it took the echoes as fast as they came the
	// queue never filled. Then every echo arrives. The window covers the
	// heartbeat too: a connection the server stopped reading for a while
	// is silent, by its clock, only from its last read.
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * soakOpTimeout))
	echoes := 0
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.fail("flooder: the server neither closed nor kept up after 1 MiB against a 128 KiB queue (%d of %d echoes)", echoes, floodMessages)
				return
			}
			c.st.floodsClosed.Add(1) // EOF or reset
			return
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, body); err != nil {
			c.st.floodsClosed.Add(1)
			return
		}
		if h.OpCode == ws.OpBinary && len(body) == len(p) {
			if echoes++; echoes == floodMessages {
				c.st.floodsKeptUp.Add(1)
				return
			}
			continue
		}
		if h.OpCode == ws.OpClose {
			if code, reason := closeCode(body); code != 1008 && code != 1001 {
				c.fail("flooder: close %d %q, want 1008 slow consumer", code, reason)
				return
			}
			c.st.floodsClosed.Add(1)
			return
		}
	}
}
