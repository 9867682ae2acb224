// Command monitor_client is a Go version of monitor_client.py, the client
// of the monitoring system in section 4 of the websockets tutorial that
// examples/tutorial reproduces on moonwire.
//
// It connects to the /monitor route with the X-Monitor-Token header, and
// while connected:
//
//   - every -report interval sends a text report "CPU: 12.34%, MEM: 56.78%"
//     and a binary report "12.34|56.78" (CPU uniform in [10, 80), memory in
//     [20, 90), as in the tutorial);
//   - every -heartbeat interval sends the text "ping" and expects "pong"
//     within 3 seconds, or drops the connection;
//   - prints every broadcast it receives, with a timestamp.
//
// On any failure it reconnects with exponential backoff: 3 seconds at first
// (the tutorial's RECONNECT_INTERVAL), doubling up to 30 seconds, and back to
// 3 seconds once a connection has succeeded. SIGINT or SIGTERM, -duration
// and -reports end it with a close frame 1000 and exit status 0.
//
// One goroutine reads frames; everything that writes (reports, heartbeats,
// answers to protocol pings, close frames) runs on the session loop, so
// frames never interleave on the wire.
//
//	go run ./examples/tutorial/monitor_client -report 2s -duration 30s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Config holds the settings of one run. Zero durations in the optional
// fields (PongTimeout, DialTimeout, ReconnectMin, ReconnectMax) take the
// tutorial's values; see DefaultConfig.
type Config struct {
	URL          string        // WebSocket URL of the /monitor route
	Token        string        // sent as the X-Monitor-Token header
	Report       time.Duration // interval between report rounds (text + binary)
	Heartbeat    time.Duration // interval between "ping" messages
	PongTimeout  time.Duration // how long to wait for "pong"
	DialTimeout  time.Duration // bound on TCP connect plus handshake
	Duration     time.Duration // stop after this long; 0 = run until cancelled
	Reports      int           // stop after this many report rounds; 0 = no limit
	ReconnectMin time.Duration // first reconnect delay
	ReconnectMax time.Duration // cap on the reconnect delay
}

// DefaultConfig returns the tutorial's settings: the moonwire /monitor URL,
// token monitor_token_2025, reports every 5 s, heartbeats every 8 s with a
// 3 s pong timeout, and reconnects from 3 s up to 30 s.
func DefaultConfig() Config {
	return Config{
		URL:          "ws://localhost:8765/monitor",
		Token:        "monitor_token_2025",
		Report:       5 * time.Second,
		Heartbeat:    8 * time.Second,
		PongTimeout:  3 * time.Second,
		DialTimeout:  10 * time.Second,
		ReconnectMin: 3 * time.Second,
		ReconnectMax: 30 * time.Second,
	}
}

// withDefaults fills the optional zero fields of cfg from DefaultConfig and
// checks the rest.
func (cfg Config) withDefaults() (Config, error) {
	def := DefaultConfig()
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = def.PongTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = def.DialTimeout
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = def.ReconnectMin
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = def.ReconnectMax
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, fmt.Errorf("bad -url: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return cfg, fmt.Errorf("bad -url %q: scheme must be ws or wss", cfg.URL)
	}
	switch {
	case cfg.Report <= 0:
		return cfg, errors.New("-report must be positive")
	case cfg.Heartbeat <= 0:
		return cfg, errors.New("-heartbeat must be positive")
	case cfg.Duration < 0:
		return cfg, errors.New("-duration must not be negative")
	case cfg.Reports < 0:
		return cfg, errors.New("-reports must not be negative")
	}
	return cfg, nil
}

// main parses the flags, runs the client until it is told to stop and
// exits 0, or 2 for bad flags.
func main() {
	cfg := DefaultConfig()
	flag.StringVar(&cfg.URL, "url", cfg.URL, "WebSocket URL of the monitor route")
	flag.StringVar(&cfg.Token, "token", cfg.Token, "value of the X-Monitor-Token header")
	flag.DurationVar(&cfg.Report, "report", cfg.Report, "interval between report rounds (one text and one binary report)")
	flag.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, `interval between "ping" heartbeats`)
	flag.DurationVar(&cfg.Duration, "duration", 0, "exit 0 after this long (0 = run until SIGINT)")
	flag.IntVar(&cfg.Reports, "reports", 0, "exit 0 after this many report rounds (0 = no limit)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "monitor_client:", err)
		os.Exit(2)
	}
}

// errStop ends a session on purpose: the context is done or the report
// limit is reached. run returns nil for it.
var errStop = errors.New("stop")

// run connects, reports and reconnects until ctx is done, cfg.Duration has
// passed or cfg.Reports rounds have been sent; it then closes the
// connection with 1000 and returns nil. It returns an error only for an
// unusable cfg. Every line it prints goes to out.
func run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	c := &client{cfg: cfg, out: out}
	delay := cfg.ReconnectMin
	for {
		connected, err := c.session(ctx)
		if errors.Is(err, errStop) || ctx.Err() != nil {
			return nil
		}
		if connected {
			delay = cfg.ReconnectMin
		}
		c.logf("reconnecting in %s...", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			c.logf("stopped while waiting to reconnect")
			return nil
		case <-t.C:
		}
		delay = min(2*delay, cfg.ReconnectMax)
	}
}

// client is the state that outlives a connection: the settings, the output
// and the number of report rounds sent so far.
type client struct {
	cfg     Config
	out     io.Writer
	mu      sync.Mutex // serialises lines on out
	reports int
}

// logf prints one line to c.out, prefixed with the local time in the format
// of Python's datetime.now(), as the tutorial's client does.
func (c *client) logf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "[%s] %s\n", time.Now().Format("2006-01-02 15:04:05.000000"), fmt.Sprintf(format, args...))
}

// frame is one frame read from the server, or the error that ended reading.
type frame struct {
	op   ws.OpCode
	data []byte
	err  error
}

// session makes one connection and serves it until it fails or must stop.
// connected reports whether the handshake succeeded; err is errStop for a
// deliberate stop and describes the failure otherwise.
func (c *client) session(ctx context.Context) (connected bool, err error) {
	var refusal string
	d := ws.Dialer{
		Timeout: c.cfg.DialTimeout,
		Header:  ws.HandshakeHeaderHTTP(http.Header{"X-Monitor-Token": {c.cfg.Token}}),
		OnStatusError: func(status int, reason []byte, resp io.Reader) {
			refusal = describeRefusal(status, reason, resp)
		},
	}
	conn, br, _, err := d.Dial(ctx, c.cfg.URL)
	if err != nil {
		if ctx.Err() != nil {
			return false, errStop
		}
		if refusal != "" {
			c.logf("connection refused: %s", refusal)
		} else {
			c.logf("cannot connect: %v", err)
		}
		return false, err
	}
	c.logf("connected to the monitor server %s", c.cfg.URL)

	var src io.Reader = conn
	if br != nil {
		src = br // frames the server sent right after the handshake
	}
	frames := make(chan frame)
	done := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		readFrames(src, frames, done)
	}()
	defer func() {
		close(done)
		conn.Close()
		<-readerDone
		if br != nil {
			ws.PutReader(br)
		}
	}()

	s := &session{client: c, conn: conn, frames: frames}
	return true, s.loop(ctx)
}

// describeRefusal turns a refused handshake into "HTTP 401: <body>", the
// body being the reason a moonwire script gave.
func describeRefusal(status int, reason []byte, resp io.Reader) string {
	text := fmt.Sprintf("HTTP %d %s", status, reason)
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return text
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 512))
	if b := strings.TrimSpace(string(body)); b != "" {
		text += ": " + b
	}
	return text
}

// readFrames is the connection's only reader. It passes every frame, data
// or control, to frames, and finally the error that stopped it; it stops
// after a close frame, and gives up sending once done is closed.
func readFrames(src io.Reader, frames chan<- frame, done <-chan struct{}) {
	deliver := func(f frame) bool {
		select {
		case frames <- f:
			return true
		case <-done:
			return false
		}
	}
	rd := &wsutil.Reader{
		Source:         src,
		State:          ws.StateClientSide,
		CheckUTF8:      true,
		MaxMessageSize: 1 << 20,
		// A ping or close inside a fragmented message still has to be
		// answered by the session loop.
		OnIntermediate: func(h ws.Header, r io.Reader) error {
			p, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			if !deliver(frame{op: h.OpCode, data: p}) {
				return errStop
			}
			return nil
		},
	}
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			deliver(frame{err: err})
			return
		}
		if hdr.OpCode == ws.OpContinuation {
			// Only reached for a continuation without a first frame.
			deliver(frame{err: errors.New("unexpected continuation frame")})
			return
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			deliver(frame{err: err})
			return
		}
		if !deliver(frame{op: hdr.OpCode, data: data}) || hdr.OpCode == ws.OpClose {
			return
		}
	}
}

// session is one live connection. Only its loop writes to conn.
type session struct {
	*client
	conn   net.Conn
	frames <-chan frame
}

// loop sends reports and heartbeats on their tickers and handles the
// frames the reader delivers, until the connection fails (the error says
// why) or must stop (errStop, after a clean close).
func (s *session) loop(ctx context.Context) error {
	report := time.NewTicker(s.cfg.Report)
	defer report.Stop()
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	pongTimer := time.NewTimer(0)
	<-pongTimer.C
	defer pongTimer.Stop()
	awaitingPong := false

	for {
		select {
		case <-ctx.Done():
			s.closeAndWait("stopping")
			return errStop

		case <-report.C:
			if err := s.sendReports(); err != nil {
				s.logf("report failed: %v", err)
				return err
			}
			if s.cfg.Reports > 0 && s.reports >= s.cfg.Reports {
				s.closeAndWait(fmt.Sprintf("sent %d report rounds", s.reports))
				return errStop
			}

		case <-heartbeat.C:
			if awaitingPong {
				continue // the previous ping is still within its timeout
			}
			if err := s.write(ws.OpText, []byte("ping")); err != nil {
				s.logf("heartbeat failed: %v", err)
				return err
			}
			awaitingPong = true
			pongTimer.Reset(s.cfg.PongTimeout)

		case <-pongTimer.C:
			s.logf("heartbeat timed out (no pong within %s), reconnecting", s.cfg.PongTimeout)
			s.closeAndWait("heartbeat timeout")
			return errors.New("heartbeat timeout")

		case f := <-s.frames:
			if f.err != nil {
				s.logf("connection lost: %v", f.err)
				return f.err
			}
			switch f.op {
			case ws.OpPing:
				if err := s.write(ws.OpPong, f.data); err != nil {
					s.logf("connection lost: %v", err)
					return err
				}
			case ws.OpPong:
				// Answer to a protocol ping; this client sends none.
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(f.data)
				s.logf("connection closed by the server (code %d, reason %q)", code, reason)
				// Echo the code, as RFC 6455 asks; the reader has stopped.
				_ = s.write(ws.OpClose, closeBody(code))
				return fmt.Errorf("closed by the server: %d %s", code, reason)
			case ws.OpText:
				if string(f.data) == "pong" && awaitingPong {
					awaitingPong = false
					pongTimer.Stop()
					s.logf("heartbeat ok")
					continue
				}
				s.logf("received monitor broadcast: %s", f.data)
			case ws.OpBinary:
				s.logf("received monitor broadcast (binary, %d bytes): %q", len(f.data), f.data)
			}
		}
	}
}

// sendReports sends one round: the text report, then the binary one.
func (s *session) sendReports() error {
	cpu := 10 + 70*rand.Float64()
	mem := 20 + 70*rand.Float64()
	text := fmt.Sprintf("CPU: %.2f%%, MEM: %.2f%%", cpu, mem)
	if err := s.write(ws.OpText, []byte(text)); err != nil {
		return err
	}
	s.logf("reported text data: %s", text)
	bin := fmt.Sprintf("%.2f|%.2f", cpu, mem)
	if err := s.write(ws.OpBinary, []byte(bin)); err != nil {
		return err
	}
	s.logf("reported binary data: %q (%d bytes)", bin, len(bin))
	s.reports++
	return nil
}

// write sends one frame as a client (masked), giving up after 5 seconds.
func (s *session) write(op ws.OpCode, payload []byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	return wsutil.WriteClientMessage(s.conn, op, payload)
}

// closeAndWait starts the closing handshake with 1000 and waits up to two
// seconds for the server's close frame, printing what arrives meanwhile.
func (s *session) closeAndWait(why string) {
	s.logf("closing the connection (code 1000): %s", why)
	if err := s.write(ws.OpClose, closeBody(ws.StatusNormalClosure)); err != nil {
		return
	}
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case <-timeout.C:
			s.logf("no close frame from the server within 2s")
			return
		case f := <-s.frames:
			switch {
			case f.err != nil:
				return
			case f.op == ws.OpClose:
				code, reason := ws.ParseCloseFrameData(f.data)
				s.logf("connection closed (code %d, reason %q)", code, reason)
				return
			case f.op == ws.OpText:
				s.logf("received monitor broadcast: %s", f.data)
			case f.op == ws.OpBinary:
				s.logf("received monitor broadcast (binary, %d bytes): %q", len(f.data), f.data)
			}
		}
	}
}

// closeBody is the payload of a close frame with code and no reason; an
// empty code (a close frame without a body) gives an empty payload.
func closeBody(code ws.StatusCode) []byte {
	if code.Empty() {
		return nil
	}
	return ws.NewCloseFrameBody(code, "")
}
