//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/moonwire/moonwire/cmd/moonbench/baseline"
)

// TestMain lets the test binary serve as the -baseline child process, as
// the moonbench binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == serveBaselineCmd {
		os.Exit(serveBaseline(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// recordingListener remembers the remote address of every accepted
// connection.
type recordingListener struct {
	net.Listener
	mu      sync.Mutex
	remotes map[string]bool
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			l.mu.Lock()
			l.remotes[a.IP.String()] = true
			l.mu.Unlock()
		}
	}
	return c, err
}

func (l *recordingListener) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.remotes)
}

// startBaseline serves a baseline server of kind in-process on 127.0.0.1:0.
func startBaseline(t *testing.T, kind baseline.Kind) (string, *recordingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln, remotes: map[string]bool{}}
	srv := baseline.New(kind, baseline.Options{})
	go func() { _ = srv.Serve(rl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), rl
}

// runJSON runs moonbench with args and returns the JSON line, checking that
// the table came before it.
func runJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	cfg, err := parseFlags(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := runScenario(context.Background(), cfg, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var out bytes.Buffer
	if err := report(&out, res, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 5 || !strings.HasPrefix(lines[0], "scenario") {
		t.Fatalf("want a table then the JSON line, got:\n%s", out.String())
	}
	last := lines[len(lines)-1]
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, last)
	}
	if m["scenario"] != cfg.scenario || m["label"] != "test" {
		t.Fatalf("scenario %v label %v", m["scenario"], m["label"])
	}
	return m
}

func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("%s missing or not a number in %v", key, m)
	}
	return v
}

func wantZero(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v := num(t, m, k); v != 0 {
			t.Errorf("%s = %v, want 0 (%v)", k, v, m)
		}
	}
}

func wantPositive(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v := num(t, m, k); v <= 0 {
			t.Errorf("%s = %v, want > 0 (%v)", k, v, m)
		}
	}
}

var short = []string{"-duration", "300ms", "-warmup", "50ms", "-close-wait", "1s", "-label", "test"}

func TestEcho(t *testing.T) {
	t.Parallel()
	addr, _ := startBaseline(t, baseline.KindEcho)
	m := runJSON(t, append([]string{"-scenario", "echo", "-url", "ws://" + addr + "/echo",
		"-conns", "10", "-inflight", "4", "-size", "40"}, short...)...)
	wantPositive(t, m, "round_trips", "round_trips_per_s", "p50_us", "p99_us")
	wantZero(t, m, "errors", "mismatches", "protocol_errors", "dial_errors")
	if num(t, m, "conns") != 10 {
		t.Errorf("conns %v", m["conns"])
	}
}

func TestBroadcast(t *testing.T) {
	t.Parallel()
	for _, rate := range []string{"0", "2000"} {
		t.Run("rate="+rate, func(t *testing.T) {
			t.Parallel()
			addr, _ := startBaseline(t, baseline.KindChat)
			m := runJSON(t, append([]string{"-scenario", "broadcast", "-url", "ws://" + addr + "/room",
				"-subs", "10", "-pubs", "2", "-rate", rate, "-inflight", "4", "-size", "64"}, short...)...)
			wantPositive(t, m, "published", "deliveries", "deliveries_per_s", "expected", "p50_us")
			wantZero(t, m, "lost", "gaps", "out_of_order", "errors", "mismatches", "protocol_errors", "dial_errors", "unexpected_messages")
			if num(t, m, "delivered") != num(t, m, "expected") {
				t.Errorf("delivered %v of %v", m["delivered"], m["expected"])
			}
			// Two publishers in one room hear each other.
			wantPositive(t, m, "publisher_received")
		})
	}
}

// The idle scenario spreads its connections over several source addresses:
// the JSON says so, and so does the server.
func TestIdleSources(t *testing.T) {
	t.Parallel()
	addr, rl := startBaseline(t, baseline.KindEcho)
	m := runJSON(t, "-scenario", "idle", "-url", "ws://"+addr+"/echo", "-conns", "20", "-sources", "5",
		"-duration", "300ms", "-settle", "50ms", "-close-wait", "1s", "-label", "test")
	if num(t, m, "held") != 20 || num(t, m, "opened") != 20 {
		t.Errorf("held %v opened %v, want 20", m["held"], m["opened"])
	}
	wantZero(t, m, "lost", "errors", "dial_errors")
	if got := num(t, m, "sources"); got != 5 {
		t.Errorf("sources %v, want 5", got)
	}
	if got := rl.sources(); got != 5 {
		t.Errorf("server saw %d source addresses, want 5", got)
	}
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	addr, rl := startBaseline(t, baseline.KindEcho)
	m := runJSON(t, append([]string{"-scenario", "handshake", "-url", "ws://" + addr + "/echo",
		"-conns", "3", "-header", "X-Auth-Token: token_123"}, short...)...)
	wantPositive(t, m, "connects", "connects_per_s", "p50_us")
	wantZero(t, m, "errors", "refused", "close_errors")
	if rl.sources() < 2 {
		t.Errorf("handshakes came from %d source addresses, want them spread", rl.sources())
	}
}

// -baseline runs the scenario against a child serve-baseline process and
// samples its CPU and memory through its pid.
func TestBaselineChild(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	code := run([]string{"-baseline", "-scenario", "echo", "-conns", "5", "-json",
		"-duration", "300ms", "-warmup", "50ms", "-close-wait", "1s", "-label", "test"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("-json printed %d lines:\n%s", len(lines), out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["baseline"] != "echo" {
		t.Errorf("baseline %v", m["baseline"])
	}
	wantPositive(t, m, "server_pid", "server_rss_max_bytes", "round_trips")
	wantZero(t, m, "errors", "mismatches")
	if _, ok := m["server_cpu_pct"]; !ok {
		t.Error("no server_cpu_pct")
	}
}

func TestFDLimitReported(t *testing.T) {
	t.Parallel()
	_, err := checkFDs(1<<30, 64)
	if err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE") || !strings.Contains(err.Error(), "-conns") {
		t.Fatalf("err = %v, want one naming RLIMIT_NOFILE and the -conns that fits", err)
	}
	lim, err := checkFDs(10, 64)
	if err != nil || lim < 74 {
		t.Fatalf("checkFDs(10) = %d, %v", lim, err)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-scenario", "idle"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.conns != 10000 || cfg.sources != 253 || cfg.duration.Seconds() != 30 || !strings.HasSuffix(cfg.url, "/echo") {
		t.Errorf("idle defaults: %+v", cfg)
	}
	cfg, err = parseFlags([]string{"-scenario", "broadcast", "-url", "ws://127.0.0.1:1/x"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.size != 64 || cfg.inflight != 32 || cfg.url != "ws://127.0.0.1:1/x" || cfg.sources != 0 {
		t.Errorf("broadcast defaults: %+v", cfg)
	}
	for _, bad := range [][]string{
		{"-scenario", "nope"},
		{"-scenario", "echo", "-size", "4"},
		{"-scenario", "broadcast", "-size", "8"},
		{"-scenario", "broadcast", "-rate", "0", "-inflight", "0"},
		{"-scenario", "echo", "-header", "nocolon"},
	} {
		cfg, err := parseFlags(bad, &bytes.Buffer{})
		if err == nil && bad[len(bad)-2] == "-header" {
			_, err = newDialer(cfg)
		}
		if err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
