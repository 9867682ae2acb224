//go:build linux

// Command moonbench is moonwire's load generator: it drives a WebSocket
// server with many connections from a few goroutines and reports
// throughput, latency, errors and the server's CPU and memory.
//
// Run "moonbench -h" for the scenarios and flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/cmd/internal/toolflag"
)

const usageText = `moonbench: load generator for moonwire (and any WebSocket server)

Usage:
  moonbench -scenario echo      [-url ws://127.0.0.1:8765/echo] [-conns 100] [-inflight 8] [-size 32]
  moonbench -scenario broadcast [-url ws://127.0.0.1:8765/room] [-subs 1000] [-pubs 1] [-rate 1000] [-size 64]
  moonbench -scenario idle      [-url ws://127.0.0.1:8765/echo] [-conns 10000] [-sources 253] [-settle 5s]
  moonbench -scenario handshake [-url ws://127.0.0.1:8765/echo] [-conns 8] [-header 'X-Auth-Token: token_123']
  moonbench -baseline -scenario S ...   run S against the plain gobwas/ws server, started as a child
  moonbench cluster-compare [-brokers redis,nats] [-nodes 3] [-subs 10000] ...
             start moonwire nodes and compare broadcast on one node with a cluster (-h for more)
  moonbench reconnect-storm [-brokers redis,nats] [-clients 5000] [-rate 20] ...
             SIGKILL one of 3 chat nodes under followers and measure their recovery (-h for more)
  moonbench api-publish [-url ws://127.0.0.1:8765/room] [-api http://127.0.0.1:8766] [-subs 1000] [-pubs 8]
             publish through the server HTTP API to a room of subscribers (-h for more)
  moonbench handshake-backend [-conns 8] [-duration 5s] [-backend-delay 0]
             connects/s when on_handshake asks a backend over HTTP, against Lua alone (-h for more)
  moonbench ab -base /tmp/mw_base -head /tmp/mw_head [-scenarios LIST] [-repeat 3] [-duration 8s]
             compare two moonwire binaries, fresh servers run after run, medians and ratios (-h for more)

Scenarios:
  echo       -conns connections, each keeping -inflight messages of -size bytes outstanding
             for -duration after -warmup; every reply is checked byte for byte.
             Reports round trips/s, latency p50/p99/p99.9, errors, mismatches.
  broadcast  -subs subscribers and -pubs publishers on one route whose script joins every
             connection to one room and broadcasts each message to the room except its
             sender. Publishers send -rate messages/s in all (0: as fast as -inflight
             allows), at most -inflight each not yet delivered to every subscriber: a
             server that cannot keep up gets fewer messages ("slots skipped") instead
             of an ever-growing queue, so the rate is reached only while delivery
             latency stays under -inflight × -pubs / -rate (32 ms at the defaults).
             Reports deliveries/s, delivery latency, lost messages (by sequence number,
             per subscriber), and with -pid server CPU seconds per million deliveries.
  idle       opens -conns connections spread over -sources source addresses (127.0.0.2 and
             up), holds them for -duration answering the server's pings, and reports held
             and lost connections; with -pid the server's RSS before (sampled when the
             scenario starts: give it a freshly started server) and after (-settle after the
             last connection opened), in total and per connection.
  handshake  -conns dialers, each dialing, upgrading, and closing in a loop for -duration.
             Reports connects/s, handshake latency (TCP connect + upgrade), refused, errors.

Output: a table, then one JSON line (only the JSON line with -json).
With -pid (automatic with -baseline) the server's CPU and RSS are sampled from /proc.

Several nodes: -url takes a comma-separated list of URLs. Connections go to them
round-robin (broadcast: subscribers round-robin, publishers all on the first), and
-pid takes a comma-separated list of the nodes' pids, whose CPU and RSS are summed
(and reported per node). -broker-pid samples a broker (Redis, NATS) on its own.

Flags:
`

type config struct {
	scenario      string
	url           string
	conns         int
	inflight      int
	size          int
	duration      time.Duration
	warmup        time.Duration
	subs          int
	pubs          int
	rate          float64
	pids          pidList
	brokerPID     int
	jsonOnly      bool
	label         string
	headers       []string
	workers       int
	sources       int
	settle        time.Duration
	drain         time.Duration
	dialConc      int
	dialTimeout   time.Duration
	closeWait     time.Duration
	baseline      bool
	baselineBufio bool
	cpuProfile    string

	// urls is -url split at commas: the nodes of a cluster.
	urls []string

	// set by -baseline
	baselineKind string

	// onWindow, when set, is called as the measurement window starts
	// (cluster-compare starts its profiles there).
	onWindow func()
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// pidList is -pid: one process id or a comma-separated list of them.
type pidList []int

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(s string) error {
	var out pidList
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return fmt.Errorf("%q is not a process id", f)
		}
		if v > 0 {
			out = append(out, v)
		}
	}
	*p = out
	return nil
}

// splitList splits a comma-separated flag value, dropping the spaces
// around each item; an empty item is kept (and refused by validate).
func splitList(s string) []string {
	f := strings.Split(s, ",")
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

// defaults per scenario for the flags left unset.
var scenarioDefaults = map[string]map[string]string{
	"echo":      {"url": "ws://127.0.0.1:8765/echo", "conns": "100", "size": "32", "sources": "0"},
	"broadcast": {"url": "ws://127.0.0.1:8765/room", "size": "64", "inflight": "32", "sources": "0"},
	"idle":      {"url": "ws://127.0.0.1:8765/echo", "conns": "10000", "duration": "30s", "warmup": "0s", "sources": "253"},
	"handshake": {"url": "ws://127.0.0.1:8765/echo", "conns": "8", "sources": "253"},
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("moonbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.scenario, "scenario", "echo", "echo, broadcast, idle or handshake")
	fs.StringVar(&cfg.url, "url", "", "target `URL`, or a comma-separated list of nodes' URLs (default per scenario: ws://127.0.0.1:8765/echo, /room for broadcast)")
	fs.IntVar(&cfg.conns, "conns", 0, "connections (echo 100, idle 10000) or parallel dialers (handshake 8)")
	fs.IntVar(&cfg.inflight, "inflight", 8, "messages outstanding per connection (echo, default 8) or per publisher: sent but not yet delivered to every subscriber (broadcast, default 32; 0: no bound when -rate > 0)")
	fs.IntVar(&cfg.size, "size", 0, "payload `bytes` (echo 32, min 8; broadcast 64, min 16)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measurement window; idle: how long the connections are held (idle: 30s)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "run before the window starts, not measured (idle: unused)")
	fs.IntVar(&cfg.subs, "subs", 1000, "broadcast: subscriber connections")
	fs.IntVar(&cfg.pubs, "pubs", 1, "broadcast: publisher connections")
	fs.Float64Var(&cfg.rate, "rate", 1000, "broadcast: messages/s over all publishers; 0 = as fast as -inflight allows")
	fs.Var(&cfg.pids, "pid", "server process `id`, or a comma-separated list of the nodes' ids: sample CPU and RSS from /proc (summed over nodes)")
	fs.IntVar(&cfg.brokerPID, "broker-pid", 0, "broker process id (Redis, NATS): its CPU is sampled and reported on its own, not in the server's")
	fs.BoolVar(&cfg.jsonOnly, "json", false, "print only the JSON line")
	fs.StringVar(&cfg.label, "label", "", "free text copied into the JSON line")
	fs.Var((*multiFlag)(&cfg.headers), "header", "`'Name: value'` added to every handshake (repeatable)")
	fs.IntVar(&cfg.workers, "workers", runtime.NumCPU(), "epoll worker goroutines driving the connections")
	fs.IntVar(&cfg.sources, "sources", -1, "source addresses 127.0.0.2.. to spread connections over, at most 253; 0: the kernel's choice; -1: 253 for idle and handshake, 0 for the others")
	fs.DurationVar(&cfg.settle, "settle", 5*time.Second, "idle: wait after the last connection opens before sampling the server's RSS")
	fs.DurationVar(&cfg.drain, "drain", 3*time.Second, "broadcast: how long to wait after the window for deliveries still in flight")
	fs.IntVar(&cfg.dialConc, "dial-concurrency", 64, "connections dialed at once while setting up")
	fs.DurationVar(&cfg.dialTimeout, "dial-timeout", 10*time.Second, "timeout of one dial + upgrade")
	fs.DurationVar(&cfg.closeWait, "close-wait", 3*time.Second, "at the end, how long to wait for the server to close the connections after our close frames")
	fs.BoolVar(&cfg.baseline, "baseline", false, "start the baseline gobwas/ws server as a child process and run against it (-url's path is kept)")
	fs.BoolVar(&cfg.baselineBufio, "baseline-bufio", false, "with -baseline: the baseline variant with bufio reader and writer")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write moonbench's own CPU profile to `file`")
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
	defs, ok := scenarioDefaults[cfg.scenario]
	if !ok {
		return nil, fmt.Errorf("unknown -scenario %q (want echo, broadcast, idle or handshake)", cfg.scenario)
	}
	if err := toolflag.SetDefaults(fs, defs); err != nil {
		return nil, err
	}
	cfg.urls = splitList(cfg.url)
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.warmup < 0:
		return errors.New("-warmup must not be negative")
	case c.workers < 1:
		return errors.New("-workers must be at least 1")
	case c.dialConc < 1:
		return errors.New("-dial-concurrency must be at least 1")
	case c.baseline && len(c.urls) > 1:
		return errors.New("-baseline starts one server: give -url one URL")
	}
	for _, u := range c.urls {
		if u == "" {
			return fmt.Errorf("-url %q: empty URL in the list", c.url)
		}
	}
	switch c.scenario {
	case "echo":
		if c.conns < 1 || c.inflight < 1 {
			return errors.New("echo needs -conns >= 1 and -inflight >= 1")
		}
		if c.size < minEchoSize {
			return fmt.Errorf("echo needs -size >= %d (the timestamp)", minEchoSize)
		}
	case "broadcast":
		if c.subs < 1 || c.pubs < 1 {
			return errors.New("broadcast needs -subs >= 1 and -pubs >= 1")
		}
		if c.size < minBroadcastSize {
			return fmt.Errorf("broadcast needs -size >= %d (timestamp, publisher, sequence)", minBroadcastSize)
		}
		if c.rate < 0 || (c.rate == 0 && c.inflight < 1) {
			return errors.New("broadcast needs -rate >= 0, and -inflight >= 1 when -rate is 0")
		}
		if c.inflight < 0 {
			return errors.New("-inflight must not be negative")
		}
	case "idle", "handshake":
		if c.conns < 1 {
			return errors.New(c.scenario + " needs -conns >= 1")
		}
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == serveBaselineCmd {
		return serveBaseline(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == clusterCompareCmd {
		return clusterCompare(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == stormCmd {
		return reconnectStorm(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == apiPublishCmd {
		return apiPublish(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == hsBackendCmd {
		return hsBackend(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == abCmd {
		return abMode(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "moonbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.baseline {
		child, err := startBaselineChild(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "moonbench:", err)
			return 1
		}
		defer child.stop()
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "moonbench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "moonbench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	res, err := runScenario(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "moonbench:", err)
		return 1
	}
	if err := report(stdout, res, cfg.jsonOnly); err != nil {
		fmt.Fprintln(stderr, "moonbench:", err)
		return 1
	}
	return 0
}

// runScenario runs the configured scenario and returns its result.
func runScenario(ctx context.Context, cfg *config, log io.Writer) (result, error) {
	switch cfg.scenario {
	case "echo":
		return runEcho(ctx, cfg, log)
	case "broadcast":
		return runBroadcast(ctx, cfg, log)
	case "idle":
		return runIdle(ctx, cfg, log)
	case "handshake":
		return runHandshake(ctx, cfg, log)
	}
	return nil, fmt.Errorf("unknown scenario %q", cfg.scenario)
}

// runMode runs one of moonbench's modes: parse reads its flags
// (flag.ErrHelp, usage printed: exit 0; any other error: exit 2), then run
// does the work until it is done or the process is interrupted (an error:
// exit 1). prefix starts every error line.
func runMode[O any](prefix string, args []string, stderr io.Writer, parse func([]string, io.Writer) (O, error), run func(context.Context, O) error) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, prefix, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(stderr, prefix, err)
		return 1
	}
	return 0
}
