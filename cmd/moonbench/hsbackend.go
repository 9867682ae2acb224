//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// hsBackendCmd is the mode that measures on_handshake asking a backend
// over HTTP (the http module), against the same decision made in Lua:
//
//	moonbench handshake-backend [-conns 8] [-duration 5s] [-backend-delay 0]
//
// It builds moonwire, runs a small authorization backend in this process
// on 127.0.0.1 (GET /auth?token=T: 200 for "good", 403 otherwise, after
// -backend-delay), starts moonwire with two routes whose on_handshake
// decide on the token, /lua in Lua alone and /backend through
// http.request to the backend, and runs the handshake scenario against
// each in turn.
const hsBackendCmd = "handshake-backend"

const hsBackendUsage = `moonbench handshake-backend: connects/s when on_handshake asks a backend over HTTP

Usage:
  moonbench handshake-backend [-conns 8] [-duration 5s] [-warmup 1s] [-backend-delay 0]
                              [-moonwire /tmp/moonwire] [-build=true] [-port 18960] [-vms 0]

Builds moonwire (go build -o -moonwire ./cmd/moonwire, from the module
root; -build=false uses the binary as it is), serves an authorization
backend in this process (GET /auth?token=T answers 200 "ok" for "good",
403 otherwise, after -backend-delay), and starts moonwire on 127.0.0.1:-port
with two routes that accept ?token=good: /lua decides in Lua alone,
/backend asks the backend with http.request (modules = ["http"], the
backend in [http] allow). Then the handshake scenario (-conns dialers,
each dialing, upgrading and closing in a loop) runs against /lua, then
/backend, for -duration each after -warmup, with the server's CPU
sampled. Reports connects/s, handshake latency and the ratio.

Flags:
`

type hsBackendOpts struct {
	conns        int
	duration     time.Duration
	warmup       time.Duration
	backendDelay time.Duration
	moonwire     string
	build        bool
	port         int
	vms          int
	jsonOnly     bool
	out          string
}

func parseHSBackendFlags(args []string, stderr io.Writer) (*hsBackendOpts, error) {
	o := &hsBackendOpts{}
	fs := flag.NewFlagSet(hsBackendCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, hsBackendUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.conns, "conns", 8, "concurrent dialers")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measurement window per route")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each window")
	fs.DurationVar(&o.backendDelay, "backend-delay", 0, "the backend's delay before it answers")
	fs.StringVar(&o.moonwire, "moonwire", "/tmp/moonwire", "moonwire binary: built there (see -build)")
	fs.BoolVar(&o.build, "build", true, "build -moonwire from ./cmd/moonwire first")
	fs.IntVar(&o.port, "port", 18960, "moonwire's port on 127.0.0.1")
	fs.IntVar(&o.vms, "vms", 0, "scripts.vms (0: moonwire's default, one per CPU)")
	fs.BoolVar(&o.jsonOnly, "json", false, "print only the JSON line")
	fs.StringVar(&o.out, "out", "", "folder for the config, scripts and log (default: a temporary one)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.conns < 1 || o.duration <= 0 || o.warmup < 0 || o.backendDelay < 0 || o.vms < 0:
		return nil, errors.New("-conns and -duration must be positive; -warmup, -backend-delay and -vms not negative")
	case o.port < 1024 || o.port > 65535:
		return nil, errors.New("-port must be between 1024 and 65535")
	}
	return o, nil
}

// hsBackendScript accepts ?token=good, deciding in Lua (/lua) or by asking
// the backend (/backend, settings.backend set).
const hsBackendScript = `local M = {}
function M.on_handshake(req)
  local token = req.query.token or ""
  local backend = ws.settings.backend
  if not backend then
    if token ~= "good" then return false, 403, "bad token" end
    return true
  end
  local status, err = http.request{ url = backend .. "/auth?token=" .. token, timeout = 5 }
  if status == nil then return false, 503, err end
  if status ~= 200 then return false, 403, "bad token" end
  return true
end
return M
`

func hsBackendConfig(dir string, port, vms int, backend string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by moonbench %s\n\n", hsBackendCmd)
	fmt.Fprintf(&b, "[server]\nlisten = %q\nmax_connections = 0\n\n", "127.0.0.1:"+strconv.Itoa(port))
	fmt.Fprintf(&b, "[scripts]\ndir = %q\n", dir)
	if vms > 0 {
		fmt.Fprintf(&b, "vms = %d\n", vms)
	}
	fmt.Fprintf(&b, "\n[http]\nallow = [%q]\nconcurrency = 4096\nper_host = 256\n\n", strings.TrimPrefix(backend, "http://"))
	fmt.Fprintf(&b, "[[routes]]\npath = \"/lua\"\nscript = \"auth.lua\"\n\n")
	fmt.Fprintf(&b, "[[routes]]\npath = \"/backend\"\nscript = \"auth.lua\"\nmodules = [\"http\"]\nsettings = { backend = %q }\n", backend)
	return b.String()
}

type hsBackendRow struct {
	Route       string  `json:"route"`
	ConnectsPS  float64 `json:"connects_per_s"`
	Connects    int64   `json:"connects"`
	Refused     int64   `json:"refused"`
	Errors      int64   `json:"errors"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	ServerCPUus float64 `json:"server_cpu_us_per_connect,omitempty"`
}

func hsBackend(args []string, stdout, stderr io.Writer) int {
	return runMode("moonbench:", args, stderr, parseHSBackendFlags, func(ctx context.Context, o *hsBackendOpts) error {
		rows, err := runHSBackend(ctx, o, stderr)
		if err != nil {
			return err
		}
		if !o.jsonOnly {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "route\tconnects/s\thandshake p50\tp99\trefused\terrors\tserver CPU/connect\n")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%.0f\t%.0fµs\t%.0fµs\t%d\t%d\t%.0fµs\n", r.Route, r.ConnectsPS, r.P50us, r.P99us, r.Refused, r.Errors, r.ServerCPUus)
			}
			tw.Flush()
			if len(rows) == 2 && rows[0].ConnectsPS > 0 {
				fmt.Fprintf(stdout, "backend/lua: %.2f× the connects/s (backend delay %s, %d dialers)\n", rows[1].ConnectsPS/rows[0].ConnectsPS, o.backendDelay, o.conns)
			}
		}
		line, _ := json.Marshal(map[string]any{"mode": hsBackendCmd, "dialers": o.conns, "backend_delay_ms": o.backendDelay.Milliseconds(), "routes": rows})
		fmt.Fprintln(stdout, string(line))
		return nil
	})
}

func runHSBackend(ctx context.Context, o *hsBackendOpts, log io.Writer) ([]hsBackendRow, error) {
	if o.build {
		logf(log, "building %s", o.moonwire)
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", o.moonwire, "./cmd/moonwire").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build: %s", strings.TrimSpace(string(out)))
		}
	}
	// The backend: in this process, on a port of its own.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	delay := o.backendDelay
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		if r.URL.Query().Get("token") != "good" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	backend := "http://" + ln.Addr().String()

	dir := o.out
	if dir == "" {
		if dir, err = os.MkdirTemp("", "moonbench-hsbackend-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.lua"), []byte(hsBackendScript), 0o644); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "moonwire.toml")
	if err := os.WriteFile(cfgFile, []byte(hsBackendConfig(dir, o.port, o.vms, backend)), 0o644); err != nil {
		return nil, err
	}
	if portBusy(o.port) {
		return nil, fmt.Errorf("127.0.0.1:%d is already in use (-port)", o.port)
	}
	logPath := filepath.Join(dir, "moonwire.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.moonwire, "-config", cfgFile, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	lf.Close()
	n := &mwNode{cmd: cmd, done: make(chan struct{}), port: o.port, adminPort: o.port, log: logPath}
	go func() { _ = cmd.Wait(); close(n.done) }()
	defer n.stop()
	if err := waitListening(ctx, n); err != nil {
		return nil, err
	}
	logf(log, "moonwire pid %d on 127.0.0.1:%d, backend %s", cmd.Process.Pid, o.port, backend)

	var rows []hsBackendRow
	for _, route := range []string{"/lua", "/backend"} {
		args := []string{"-scenario", "handshake", "-url", fmt.Sprintf("ws://127.0.0.1:%d%s?token=good", o.port, route),
			"-conns", strconv.Itoa(o.conns), "-duration", o.duration.String(), "-warmup", o.warmup.String(),
			"-pid", strconv.Itoa(cmd.Process.Pid)}
		cfg, err := parseFlags(args, log)
		if err != nil {
			return nil, err
		}
		res, err := runHandshake(ctx, cfg, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", route, err)
		}
		hr, ok := res.(*handshakeResult)
		if !ok {
			return nil, fmt.Errorf("%s: unexpected result %T", route, res)
		}
		row := hsBackendRow{Route: route, ConnectsPS: hr.ConnectsPS, Connects: hr.Connects, Refused: hr.Refused,
			Errors: hr.Errors, P50us: hr.latency.P50, P99us: hr.latency.P99}
		if hr.ServerUsPerOp != nil {
			row.ServerCPUus = *hr.ServerUsPerOp
		}
		rows = append(rows, row)
	}
	return rows, nil
}
