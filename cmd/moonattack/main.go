//go:build linux

// Command moonattack reproduces, from outside and with raw sockets, four
// attacks a client with no credentials can make on a WebSocket server, and
// reports what the server process spent on them: its resident memory
// (VmRSS, VmHWM) and its open descriptors, sampled from /proc every 100 ms
// before, during and after the attack.
//
// It is the measurement behind moonwire's hardening: cmd/moonattack/compare.sh
// runs every attack against two moonwire binaries and prints one table row
// per attack and binary. Run "moonattack -h" for the attacks and flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/cmd/internal/toolflag"
)

const usageText = `moonattack: hostile-client attacks on a WebSocket server, and what they cost it

Usage:
  moonattack -attack pingflood [-url ws://127.0.0.1:8765/echo] [-conns 1] [-duration 12s] -pid PID
  moonattack -attack inflate   [-url ws://127.0.0.1:8765/echo] [-conns 6] [-frames 1000] [-max-message 1MiB] -pid PID
  moonattack -attack slowbody  [-url ws://127.0.0.1:8765/x] [-conns 2000] [-body-len 100000] [-duration 20s] -pid PID
  moonattack -attack chatstore [-url ws://127.0.0.1:8765/chat] [-conns 120] [-msgs 20] [-size 1000000] -pid PID
  moonattack -table FILE       the JSON lines of several runs (- for stdin) as a Markdown table

Attacks:
  pingflood  -conns connections each send empty masked ping frames as fast as the socket
             takes them, for -duration or -pings pings, and never read: a server that
             queues a pong per ping grows without bound.
  inflate    -conns connections negotiate permessage-deflate (no context takeover either
             way) on an echo route, send one uncompressed binary frame of -max-message
             minus 1 KiB (to grow the server's read buffer), then up to -frames compressed
             frames (RSV1) of about 1 KiB that each inflate to -max-message minus 1 KiB of
             zeros, and never read the echoes.
  slowbody   -conns connections each send a plain-HTTP "POST <url path> HTTP/1.1" with
             Host and Content-Length: -body-len, then one body byte every -trickle, never
             finishing, for -duration. Reports how many the server closed, after how long
             and with which status line, and the server's descriptors.
  chatstore  -conns connections to <url>/<room>, each in a room of its own, each send -msgs
             text messages of -size bytes to a chat route that keeps history in the shared
             store (scripts/chat.lua with history settings), reading and discarding what
             comes back, then close. Reports what the server still holds afterwards.

Every loop is bounded by its count and by -duration. For pingflood and inflate, after
-duration each connection reads for up to -peek-time / -peek-bytes to find out whether the
server closed it, and how. Then every connection is closed, and after -settle the server
is sampled once more ("after").

With -pid the server's VmRSS, VmHWM (from /proc/PID/status) and descriptor count (entries
of /proc/PID/fd) are sampled every 100 ms. "before" is sampled as the attack starts: give
it a freshly started server.

Output: a table, then one JSON line (only the JSON line with -json).

Flags:
`

// config is the parsed command line.
type config struct {
	attack      string
	url         string
	pid         int
	conns       int
	duration    time.Duration
	settle      time.Duration
	dialTimeout time.Duration
	dialConc    int
	maxMessage  int
	frames      int
	pings       int64
	bodyLen     int
	trickle     time.Duration
	msgs        int
	size        int
	peekTime    time.Duration
	peekBytes   int64
	jsonOnly    bool
	label       string
	table       string

	// target is the parsed url.
	target *url.URL
}

// attackDefaults are the per-attack values of the flags left unset.
var attackDefaults = map[string]map[string]string{
	"pingflood": {"url": "ws://127.0.0.1:8765/echo", "conns": "1", "duration": "12s"},
	"inflate":   {"url": "ws://127.0.0.1:8765/echo", "conns": "6", "duration": "12s"},
	"slowbody":  {"url": "ws://127.0.0.1:8765/x", "conns": "2000", "duration": "20s"},
	"chatstore": {"url": "ws://127.0.0.1:8765/chat", "conns": "120", "duration": "30s"},
}

// parseFlags parses args into a config, with the chosen attack's defaults
// for the flags left unset.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	var maxMessage byteSize = 1 << 20
	fs := flag.NewFlagSet("moonattack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.attack, "attack", "", "pingflood, inflate, slowbody or chatstore")
	fs.StringVar(&cfg.url, "url", "", "target `URL` (default per attack: ws://127.0.0.1:8765/echo; /x for slowbody; /chat for chatstore, rooms below it)")
	fs.IntVar(&cfg.pid, "pid", 0, "server process id: sample its VmRSS, VmHWM and descriptors from /proc")
	fs.IntVar(&cfg.conns, "conns", 0, "connections (pingflood 1, inflate 6, slowbody 2000, chatstore 120)")
	fs.DurationVar(&cfg.duration, "duration", 0, "bound on the attack (pingflood 12s, inflate 12s, slowbody 20s, chatstore 30s)")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "after the attack's connections are closed, wait this long before the last sample")
	fs.DurationVar(&cfg.dialTimeout, "dial-timeout", 5*time.Second, "bound on one TCP connect + handshake")
	fs.IntVar(&cfg.dialConc, "dial-concurrency", 64, "connections dialed at once")
	fs.Var(&maxMessage, "max-message", "the server's max_message_size: inflate's frames inflate to it minus 1 KiB (integer bytes or with KiB, MiB)")
	fs.IntVar(&cfg.frames, "frames", 1000, "inflate: compressed frames per connection")
	fs.Int64Var(&cfg.pings, "pings", 200_000_000, "pingflood: pings per connection at most")
	fs.IntVar(&cfg.bodyLen, "body-len", 100000, "slowbody: the Content-Length announced")
	fs.DurationVar(&cfg.trickle, "trickle", time.Second, "slowbody: interval between two body bytes")
	fs.IntVar(&cfg.msgs, "msgs", 20, "chatstore: messages per connection")
	fs.IntVar(&cfg.size, "size", 1_000_000, "chatstore: bytes per message (text)")
	fs.DurationVar(&cfg.peekTime, "peek-time", 2*time.Second, "pingflood, inflate: after -duration, how long to read looking for the server's close")
	fs.Int64Var(&cfg.peekBytes, "peek-bytes", 64<<20, "pingflood, inflate: how many bytes to read at most per connection while looking")
	fs.BoolVar(&cfg.jsonOnly, "json", false, "print only the JSON line")
	fs.StringVar(&cfg.label, "label", "", "free text copied into the JSON line (compare.sh: the binary)")
	fs.StringVar(&cfg.table, "table", "", "print the JSON lines of `FILE` (- for stdin) as a Markdown table and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.maxMessage = int(maxMessage)
	if cfg.table != "" {
		return cfg, nil
	}
	defs, ok := attackDefaults[cfg.attack]
	if !ok {
		return nil, fmt.Errorf("unknown -attack %q (want pingflood, inflate, slowbody or chatstore)", cfg.attack)
	}
	if err := toolflag.SetDefaults(fs, defs); err != nil {
		return nil, err
	}
	return cfg, cfg.validate()
}

// validate checks the values, and parses the URL.
func (c *config) validate() error {
	switch {
	case c.conns < 1:
		return errors.New("-conns must be at least 1")
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.settle < 0:
		return errors.New("-settle must not be negative")
	case c.dialConc < 1:
		return errors.New("-dial-concurrency must be at least 1")
	case c.dialTimeout <= 0:
		return errors.New("-dial-timeout must be positive")
	case c.maxMessage < 2048:
		return errors.New("-max-message must be at least 2 KiB")
	case c.frames < 0 || c.pings < 0 || c.msgs < 0:
		return errors.New("-frames, -pings and -msgs must not be negative")
	case c.bodyLen < 2:
		return errors.New("-body-len must be at least 2 (one byte is always left unsent)")
	case c.trickle <= 0:
		return errors.New("-trickle must be positive")
	case c.size < 1:
		return errors.New("-size must be at least 1")
	case c.peekTime < 0 || c.peekBytes < 0:
		return errors.New("-peek-time and -peek-bytes must not be negative")
	}
	u, err := url.Parse(c.url)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "http" {
		return fmt.Errorf("-url %q: want ws:// (moonattack speaks plain TCP only)", c.url)
	}
	if u.Port() == "" {
		u.Host += ":80"
	}
	if u.Path == "" {
		u.Path = "/"
	}
	c.target = u
	return nil
}

// main runs the command line and exits with its code.
func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its streams and exit code, for the tests.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "moonattack:", err)
		return 2
	}
	if cfg.table != "" {
		if err := printTable(cfg.table, stdout); err != nil {
			fmt.Fprintln(stderr, "moonattack:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runAttack(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "moonattack:", err)
		return 1
	}
	if err := report(stdout, res, cfg.jsonOnly); err != nil {
		fmt.Fprintln(stderr, "moonattack:", err)
		return 1
	}
	return 0
}

// runAttack samples the server, runs the configured attack within
// -duration, closes its connections, waits -settle and samples again.
func runAttack(ctx context.Context, cfg *config) (*result, error) {
	if _, err := toolflag.RaiseFDLimit(); err != nil {
		return nil, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	res := &result{
		Attack:    cfg.attack,
		Label:     cfg.label,
		URL:       cfg.url,
		Conns:     cfg.conns,
		DurationS: cfg.duration.Seconds(),
		SettleS:   cfg.settle.Seconds(),
	}
	s := startSampler(cfg.pid)
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, cfg.duration)
	var err error
	switch cfg.attack {
	case "pingflood":
		err = pingFlood(actx, cfg, res)
	case "inflate":
		err = inflate(actx, cfg, res)
	case "slowbody":
		err = slowBody(actx, cfg, res)
	case "chatstore":
		err = chatStore(actx, cfg, res)
	default:
		err = fmt.Errorf("unknown attack %q", cfg.attack)
	}
	cancel()
	res.ElapsedS = round2(time.Since(start).Seconds())
	if err != nil {
		s.finish()
		return nil, err
	}
	if cfg.settle > 0 {
		t := time.NewTimer(cfg.settle)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	res.ServerFigures = s.finish()
	return res, nil
}
