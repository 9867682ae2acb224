//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// abCmd is the mode that measures a change to moonwire against the
// commit before it:
//
//	moonbench ab -base /tmp/mw_base -head /tmp/mw_head [-scenarios LIST] [-repeat 3]
//
// Two builds measured in separate sessions differ by whatever else the
// machine did meanwhile; ab runs them back to back, each scenario on a
// fresh server of each build, alternating which goes first, and reports
// the medians and the head/base ratios, with the server CPU per operation
// (not the throughput, which a busy machine moves most) as the headline.
const abCmd = "ab"

const abUsage = `moonbench ab: compare two moonwire binaries in one run

Usage:
  moonbench ab -base /tmp/mw_base -head /tmp/mw_head [-scenarios LIST] [-repeat 3]
               [-duration 8s] [-port 18965] [-out DIR] [-idle-conns 19000]

For each repeat, for each scenario, runs the scenario against a fresh
-base server and a fresh -head server back to back, alternating which
goes first from one repeat to the next (repeat 1: base, head; repeat 2:
head, base; ...), so that drift over time hits both alike. Each server
listens on 127.0.0.1:-port only (moonwire -config FILE -listen ADDR), is
sampled (CPU, RSS, system calls, context switches) over the measurement
window, and is stopped with SIGTERM after its run (SIGKILL after 10 s).
A run is a 1 s warm-up, -duration, and the scenario's drain and close.

Scenarios (-scenarios, comma-separated; configs from cmd/moonbench/testdata):
  echo            echo.toml /echo: -conns 100 -size 32 -inflight 8
  broadcast       broadcast.toml /room: 1,000 subscribers, 1 publisher, 64 B,
                  closed loop (-rate 0, -inflight 32)
  broadcast@R     the same at R messages/s
  handshake       echo.toml /echo: 8 dialers connecting in a loop
  handshake-lua   auth.toml /auth: the same, on_handshake checking the
                  X-Auth-Token header in Lua
  idle            idle-room.toml /room: -idle-conns connections held in one room
                  with heartbeats on; reports RSS growth per connection
Default: ` + abDefaultScenarios + `

Per run: operations/s, server CPU µs per operation, operations per
server-CPU-second (the headline), p50/p99, lost/errors/mismatches, system
calls and context switches per operation (perf stat when it works, else
/proc: then only read/write calls are counted), deliveries per write,
other processes' CPU, and for idle the RSS per connection. Every run is a
JSON line in OUT/ab.jsonl, with the servers' logs; at the end a table per
scenario: base and head medians and head/base ratios, and every run's
headline figure.

Flags:
`

// abDefaultScenarios is what -scenarios runs unless told otherwise: the
// scenarios a change to the hot paths moves.
const abDefaultScenarios = "echo,broadcast,broadcast@100,broadcast@500,broadcast@2000,handshake-lua"

// abWarmup is every run's warm-up: long enough for the server's lanes and
// the connections' buffers to settle, short enough to keep the default
// session (3 repeats of 6 scenarios on 2 binaries) near 8 minutes.
const abWarmup = time.Second

// perfEvents are the events perf stat counts: every system call entry,
// and the scheduler's context switches.
const perfEvents = "raw_syscalls:sys_enter,context-switches"

// abOpts are ab's flags.
type abOpts struct {
	base, head string
	allowSame  bool
	scenarios  []abScenario
	repeat     int
	duration   time.Duration
	port       int
	out        string
	idleConns  int
	counters   string
	testdata   string
	workers    int
}

// abScenario is one entry of -scenarios: which moonbench scenario runs,
// against which example config and route, with which flags.
type abScenario struct {
	name   string   // as given: "echo", "broadcast@100"
	kind   string   // the runScenario scenario: echo, broadcast, handshake, idle
	config string   // file in the testdata folder
	path   string   // the route
	args   []string // the scenario's moonbench flags
	op     string   // what one operation is
}

// abScenarioFor turns a -scenarios entry into its settings, so that the
// list is checked before anything starts.
func abScenarioFor(name string, idleConns int) (abScenario, error) {
	bcast := []string{"-subs", "1000", "-pubs", "1", "-size", "64", "-inflight", "32"}
	switch name {
	case "echo":
		return abScenario{name: name, kind: "echo", config: "echo.toml", path: "/echo",
			args: []string{"-conns", "100", "-size", "32", "-inflight", "8"}, op: "round trip"}, nil
	case "broadcast":
		return abScenario{name: name, kind: "broadcast", config: "broadcast.toml", path: "/room",
			args: append(bcast, "-rate", "0"), op: "delivery"}, nil
	case "handshake":
		return abScenario{name: name, kind: "handshake", config: "echo.toml", path: "/echo",
			args: []string{"-conns", "8"}, op: "connect"}, nil
	case "handshake-lua":
		return abScenario{name: name, kind: "handshake", config: "auth.toml", path: "/auth",
			args: []string{"-conns", "8", "-header", "X-Auth-Token: token_123"}, op: "connect"}, nil
	case "idle":
		return abScenario{name: name, kind: "idle", config: "idle-room.toml", path: "/room",
			args: []string{"-conns", strconv.Itoa(idleConns)}, op: "connection"}, nil
	}
	if r, ok := strings.CutPrefix(name, "broadcast@"); ok {
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil || rate <= 0 || math.IsInf(rate, 0) {
			return abScenario{}, fmt.Errorf("-scenarios: %q: the rate after @ must be a positive number of messages/s", name)
		}
		return abScenario{name: name, kind: "broadcast", config: "broadcast.toml", path: "/room",
			args: append(bcast, "-rate", strconv.FormatFloat(rate, 'g', -1, 64)), op: "delivery"}, nil
	}
	return abScenario{}, fmt.Errorf("-scenarios: unknown scenario %q (echo, broadcast, broadcast@RATE, handshake, handshake-lua, idle)", name)
}

// parseABScenarios reads -scenarios; a name given twice is refused, as it
// would only lengthen the session.
func parseABScenarios(list string, idleConns int) ([]abScenario, error) {
	var out []abScenario
	seen := map[string]bool{}
	for _, n := range splitList(list) {
		if n == "" {
			return nil, fmt.Errorf("-scenarios %q: empty entry", list)
		}
		if seen[n] {
			return nil, fmt.Errorf("-scenarios: %q twice", n)
		}
		seen[n] = true
		sc, err := abScenarioFor(n, idleConns)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	if len(out) == 0 {
		return nil, errors.New("-scenarios: none given")
	}
	return out, nil
}

// checkBinary returns path made absolute (servers run in -out) after
// checking it is an executable file, so that a typo fails at once and not
// as a server that "did not start" in every run.
func checkBinary(flagName, path string) (string, os.FileInfo, error) {
	if path == "" {
		return "", nil, fmt.Errorf("-%s is required: the path of a moonwire executable", flagName)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", nil, fmt.Errorf("-%s %s: %w", flagName, path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil, fmt.Errorf("-%s %s: not a regular file", flagName, path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", nil, fmt.Errorf("-%s %s: not executable (mode %v)", flagName, path, fi.Mode().Perm())
	}
	return abs, fi, nil
}

// parseABFlags reads and checks ab's flags; every bound is checked here so
// that a session cannot run unbounded.
func parseABFlags(args []string, stderr io.Writer) (*abOpts, error) {
	o := &abOpts{}
	fs := flag.NewFlagSet(abCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), abUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.base, "base", "", "the moonwire `executable` before the change (required)")
	fs.StringVar(&o.head, "head", "", "the moonwire `executable` with the change (required)")
	fs.BoolVar(&o.allowSame, "allow-same", false, "allow -base and -head to be the same file (to measure the noise)")
	list := fs.String("scenarios", abDefaultScenarios, "comma-separated scenarios: echo, broadcast, broadcast@RATE, handshake, handshake-lua, idle")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of each scenario on each binary (1-20)")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "measurement window of each run (idle: how long the connections are held), at most 60s")
	fs.IntVar(&o.port, "port", 18965, "port on 127.0.0.1 every server listens on, one at a time")
	fs.StringVar(&o.out, "out", "", "folder for ab.jsonl and the servers' logs (default: a new one under $TMPDIR)")
	fs.IntVar(&o.idleConns, "idle-conns", 19000, "idle: connections held")
	fs.StringVar(&o.counters, "counters", "auto", "how system calls and context switches are counted: perf, proc (/proc: read/write calls only), or auto (perf when it works)")
	fs.StringVar(&o.testdata, "testdata", "", "folder of the example configs (default: cmd/moonbench/testdata of the module holding the working directory)")
	fs.IntVar(&o.workers, "workers", runtime.NumCPU(), "moonbench's epoll workers")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case o.repeat < 1 || o.repeat > 20:
		return nil, fmt.Errorf("-repeat %d: must be between 1 and 20", o.repeat)
	case o.duration <= 0 || o.duration > time.Minute:
		return nil, fmt.Errorf("-duration %s: must be positive and at most 60s", o.duration)
	case o.port < 1024 || o.port > 65535:
		return nil, fmt.Errorf("-port %d: must be between 1024 and 65535", o.port)
	case o.idleConns < 1:
		return nil, errors.New("-idle-conns must be at least 1")
	case o.workers < 1:
		return nil, errors.New("-workers must be at least 1")
	case o.counters != "auto" && o.counters != "perf" && o.counters != "proc":
		return nil, fmt.Errorf("-counters %q: want auto, perf or proc", o.counters)
	}
	var err error
	if o.scenarios, err = parseABScenarios(*list, o.idleConns); err != nil {
		return nil, err
	}
	var bfi, hfi os.FileInfo
	if o.base, bfi, err = checkBinary("base", o.base); err != nil {
		return nil, err
	}
	if o.head, hfi, err = checkBinary("head", o.head); err != nil {
		return nil, err
	}
	if os.SameFile(bfi, hfi) && !o.allowSame {
		return nil, fmt.Errorf("-base and -head are the same file (%s): nothing to compare (-allow-same runs it anyway, to see the noise)", o.base)
	}
	return o, nil
}

// abSlot is one run of the session, in the order the session runs them.
type abSlot struct {
	repeat   int // 1-based
	scenario int // index in -scenarios
	side     string
	first    bool // the first of its base/head pair
}

// abOrder is the session's order: per repeat, per scenario, base and head
// back to back, base first in odd repeats and head first in even ones, so
// that a machine that gets busier or quieter over the session does not
// favour one side.
func abOrder(repeat, scenarios int) []abSlot {
	var out []abSlot
	for r := 1; r <= repeat; r++ {
		sides := [2]string{"base", "head"}
		if r%2 == 0 {
			sides = [2]string{"head", "base"}
		}
		for s := 0; s < scenarios; s++ {
			for i, side := range sides {
				out = append(out, abSlot{repeat: r, scenario: s, side: side, first: i == 0})
			}
		}
	}
	return out
}

// winCounts are a server's system calls and context switches counted by
// an abCounter.
type winCounts struct {
	syscalls int64
	ctxsw    int64
	seconds  float64 // the counted window's length; 0 when it spans the whole run
}

// abCounter counts one server's system calls and context switches over
// the measurement window (or, with window 0, from start to stop), with
// perf stat or from /proc. The scenarios sample CPU and RSS themselves;
// these two counts say where a change's CPU went (fewer writes, fewer
// wake-ups).
type abCounter struct {
	perf bool
	pid  int

	mu      sync.Mutex
	started bool
	stopped bool
	cmd     *exec.Cmd // perf
	out     bytes.Buffer
	t0      time.Time
	sys0    int64
	ctx0    int64
	window  time.Duration
	done    chan struct{} // closed when res and err are final
	res     winCounts
	err     error
}

func newABCounter(perf bool, pid int) *abCounter {
	return &abCounter{perf: perf, pid: pid, done: make(chan struct{})}
}

// start begins counting for window, or until stop when window is 0. Only
// the first call counts: it is called from the scenario's window start.
func (c *abCounter) start(window time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started, c.window, c.t0 = true, window, time.Now()
	if c.perf {
		args := []string{"stat", "-e", perfEvents, "-x,", "-p", strconv.Itoa(c.pid)}
		if window > 0 {
			// perf counts while the workload runs: exactly the window.
			args = append(args, "--", "sleep", strconv.FormatFloat(window.Seconds(), 'f', 3, 64))
		}
		c.cmd = exec.Command("perf", args...)
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.cmd.Start(); err != nil {
			c.finishLocked(winCounts{}, fmt.Errorf("starting perf: %w", err))
			return
		}
		go func() {
			werr := c.cmd.Wait()
			c.mu.Lock()
			defer c.mu.Unlock()
			sys, ctx, err := parsePerfCSV(c.out.String())
			if err != nil && werr != nil {
				err = fmt.Errorf("perf stat: %w: %s", werr, strings.TrimSpace(c.out.String()))
			}
			c.finishLocked(winCounts{syscalls: sys, ctxsw: ctx, seconds: window.Seconds()}, err)
		}()
		return
	}
	var err error
	if c.sys0, c.ctx0, err = procCounts(c.pid); err != nil {
		c.finishLocked(winCounts{}, err)
		return
	}
	if window > 0 {
		time.AfterFunc(window, c.stop)
	}
}

// stop ends a count without a window (perf: SIGINT, on which perf stat
// prints its counts; /proc: the second reading). The timer of a window
// calls it too, for /proc.
func (c *abCounter) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.stopped {
		return
	}
	c.stopped = true
	if c.perf {
		if c.window == 0 && c.cmd != nil && c.cmd.Process != nil {
			_ = c.cmd.Process.Signal(os.Interrupt)
		}
		return
	}
	select {
	case <-c.done:
		return // failed at the start
	default:
	}
	sys, ctx, err := procCounts(c.pid)
	secs := 0.0
	if c.window > 0 {
		secs = time.Since(c.t0).Seconds()
	}
	c.finishLocked(winCounts{syscalls: sys - c.sys0, ctxsw: ctx - c.ctx0, seconds: secs}, err)
}

// finishLocked records the result once; c.mu is held.
func (c *abCounter) finishLocked(r winCounts, err error) {
	select {
	case <-c.done:
		return
	default:
	}
	c.res, c.err = r, err
	close(c.done)
}

// result waits at most timeout for the counts: perf must have ended, the
// window's timer fired. A perf that hangs is killed.
func (c *abCounter) result(timeout time.Duration) (winCounts, error) {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		return winCounts{}, errors.New("not counted: the measurement window never started")
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.mu.Lock()
		if c.cmd != nil && c.cmd.Process != nil {
			_ = c.cmd.Process.Kill()
		}
		c.finishLocked(winCounts{}, fmt.Errorf("counts not ready within %s", timeout))
		c.mu.Unlock()
		<-c.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res, c.err
}

// parsePerfCSV reads the system calls and context switches from perf
// stat -x, output (see perfCounts).
func parsePerfCSV(text string) (syscalls, ctxsw int64, err error) {
	counts, err := perfCounts(text)
	if err != nil {
		return 0, 0, err
	}
	var haveSys, haveCtx bool
	for ev, n := range counts {
		switch {
		case strings.Contains(ev, "raw_syscalls:sys_enter"):
			syscalls, haveSys = n, true
		case strings.Contains(ev, "context-switches") || ev == "cs":
			ctxsw, haveCtx = n, true
		}
	}
	if !haveSys || !haveCtx {
		return 0, 0, fmt.Errorf("perf stat: no %s in its output: %q", perfEvents, strings.TrimSpace(text))
	}
	return syscalls, ctxsw, nil
}

// parseIOSyscalls reads syscr + syscw from the text of /proc/PID/io: the
// read and write family of system calls only (read, readv, write, writev
// and their kin), not epoll_wait, futex, accept and the rest.
func parseIOSyscalls(text string) (int64, error) {
	return sumFields(text, "/proc io", "syscr", "syscw")
}

// parseCtxSwitches reads voluntary_ctxt_switches +
// nonvoluntary_ctxt_switches from the text of /proc/PID/task/TID/status.
func parseCtxSwitches(text string) (int64, error) {
	return sumFields(text, "status", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
}

// procCounts is the /proc fallback: syscr + syscw of the process, and the
// context switches of its threads alive now (a thread that exits takes
// its count along, so the window's difference may be a little low).
func procCounts(pid int) (syscalls, ctxsw int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading /proc/%d/io: %w", pid, err)
	}
	if syscalls, err = parseIOSyscalls(string(b)); err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("listing the threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // exited meanwhile
		}
		n, err := parseCtxSwitches(string(b))
		if err != nil {
			return 0, 0, fmt.Errorf("thread %s of %d: %w", t.Name(), pid, err)
		}
		ctxsw += n
	}
	return syscalls, ctxsw, nil
}

// probePerf says whether perf stat can count the two events on a process
// here (installed, allowed by perf_event_paranoid, tracefs mounted), on
// this very process for 0.2 s, so that the session decides once.
func probePerf(ctx context.Context) error {
	out, err := perfStatSelf(ctx, perfEvents)
	if err != nil {
		return err
	}
	_, _, err = parsePerfCSV(out)
	return err
}

// abRun is one run's record: one JSON line of OUT/ab.jsonl.
type abRun struct {
	Repeat    int    `json:"repeat"`
	Scenario  string `json:"scenario"`
	Side      string `json:"side"`
	First     bool   `json:"first_of_pair"`
	Binary    string `json:"binary"`
	Started   string `json:"started"`
	ServerPID int    `json:"server_pid,omitempty"`
	ServerLog string `json:"server_log"`
	Load      string `json:"load_avg"`
	// Error is why the run failed (no figures then).
	Error string `json:"error,omitempty"`

	Op      string  `json:"op"`
	Ops     int64   `json:"ops"`
	WindowS float64 `json:"window_s"`
	OpsPerS float64 `json:"ops_per_s"`
	// OpsPerCPUS, operations per second of server CPU, is the headline:
	// the throughput a saturated machine moves with its load, this less.
	OpsPerCPUS   *float64 `json:"ops_per_server_cpu_s,omitempty"`
	CPUUsPerOp   *float64 `json:"server_cpu_us_per_op,omitempty"`
	ServerCPUS   *float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPct *float64 `json:"server_cpu_pct,omitempty"`
	P50Us        *float64 `json:"p50_us,omitempty"`
	P99Us        *float64 `json:"p99_us,omitempty"`
	Lost         int64    `json:"lost"`
	Errors       int64    `json:"errors"`
	Mismatches   int64    `json:"mismatches"`

	// Counter says how Syscalls and CtxSwitches were counted: "perf"
	// (every system call) or "proc" (syscr + syscw: read/write calls
	// only); CountedOver "window", or "run" for idle (per connection,
	// from the first dial to the last close).
	Counter       string   `json:"counter"`
	CountedOver   string   `json:"counted_over"`
	Syscalls      *int64   `json:"syscalls,omitempty"`
	CtxSwitches   *int64   `json:"ctx_switches,omitempty"`
	SyscallsPerOp *float64 `json:"syscalls_per_op,omitempty"`
	CtxPerOp      *float64 `json:"ctx_switches_per_op,omitempty"`
	CountError    string   `json:"count_error,omitempty"`

	DeliveriesPerWrite *float64 `json:"deliveries_per_write,omitempty"`
	OthersCPUPct       *float64 `json:"others_cpu_pct,omitempty"`
	RSSPerConn         *float64 `json:"rss_per_conn_bytes,omitempty"`

	// Result is the scenario's own JSON line, every figure it has.
	Result json.RawMessage `json:"result,omitempty"`
}

// failed says whether the run produced no figures.
func (r *abRun) failed() bool { return r.Error != "" }

// fp is a pointer to v, for the optional figures.
func fp(v float64) *float64 { return &v }

// fill copies a scenario's result into the record and works out the
// per-operation figures, so that every scenario is read the same way.
func (r *abRun) fill(sc abScenario, res result, counts winCounts, cerr error) {
	var c *common
	var lat *latency
	switch v := res.(type) {
	case *echoResult:
		c, lat = &v.common, &v.latency
		r.Ops, r.OpsPerS = v.RoundTrips, v.RTPerSec
		r.Errors = v.Errors + v.Protocol + int64(v.DialErrors)
		r.Mismatches = v.Mismatches
	case *broadcastResult:
		c, lat = &v.common, &v.latency
		r.Ops, r.OpsPerS = v.Deliveries, v.DeliveriesPerS
		r.Lost = v.Lost
		r.Errors = v.Errors + v.Protocol + int64(v.DialErrors)
		r.Mismatches = v.Mismatches
		r.DeliveriesPerWrite = v.DeliveriesPerWrite
	case *handshakeResult:
		c, lat = &v.common, &v.latency
		r.Ops, r.OpsPerS = v.Connects, v.ConnectsPS
		r.Errors = v.Errors + v.Refused + v.CloseErrors
	case *idleResult:
		c = &v.common
		r.Ops, r.OpsPerS = int64(v.Opened), v.OpenPerS
		r.Lost = v.Lost
		r.Errors = v.Errors + v.Protocol + int64(v.DialErrors)
		r.RSSPerConn = v.RSSPerConn
		if v.RSSError != "" {
			r.CountError = strings.TrimSpace(r.CountError + " rss: " + v.RSSError)
		}
	default:
		r.Error = fmt.Sprintf("unexpected result %T", res)
		return
	}
	if b, err := json.Marshal(res); err == nil {
		r.Result = b
	}
	r.WindowS = c.WindowS
	if lat != nil {
		r.P50Us, r.P99Us = fp(lat.P50), fp(lat.P99)
	}
	if m := c.machineStats; m != nil {
		r.OthersCPUPct = fp(m.OthersPct)
	}
	if s := c.serverStats; s != nil && s.SampleErr == "" {
		r.ServerCPUS, r.ServerCPUPct = fp(s.CPUSec), fp(s.CPUPct)
		// idle's server CPU is the hold's, not the connections': no
		// per-operation figure.
		if sc.kind != "idle" && r.Ops > 0 && s.CPUSec > 0 {
			r.CPUUsPerOp = fp(round2(s.CPUSec * 1e6 / float64(r.Ops)))
			r.OpsPerCPUS = fp(math.Round(float64(r.Ops) / s.CPUSec))
		}
	} else if s != nil {
		r.CountError = strings.TrimSpace(r.CountError + " server sampling: " + s.SampleErr)
	}
	if cerr != nil {
		r.CountError = strings.TrimSpace(r.CountError + " " + cerr.Error())
	}
	if r.Ops == 0 {
		r.Error = "no " + sc.op + " in the window"
		return
	}
	if cerr != nil {
		return
	}
	r.Syscalls, r.CtxSwitches = &counts.syscalls, &counts.ctxsw
	// Per operation: over the counted window, at the window's rate (the
	// two windows start a few ms apart); over the whole run, per
	// connection.
	den := float64(r.Ops)
	if counts.seconds > 0 {
		den = r.OpsPerS * counts.seconds
	}
	if den > 0 {
		r.SyscallsPerOp = fp(math.Round(float64(counts.syscalls)/den*1000) / 1000)
		r.CtxPerOp = fp(math.Round(float64(counts.ctxsw)/den*10000) / 10000)
	}
}

// abRunner holds a session's state.
type abRunner struct {
	o        *abOpts
	log      io.Writer
	perf     bool
	testdata string
	results  *os.File
	seq      int
}

// abMode is the ab subcommand's entry from run().
func abMode(args []string, stdout, stderr io.Writer) int {
	return runMode("moonbench ab:", args, stderr, parseABFlags, func(ctx context.Context, o *abOpts) error {
		return runAB(ctx, o, stdout, stderr)
	})
}

// findTestdata is the folder of the example configs: -testdata, else
// cmd/moonbench/testdata of the module holding the working directory,
// else ./testdata (a test's working directory).
func findTestdata(flagDir string, need []string) (string, error) {
	var cands []string
	if flagDir != "" {
		cands = []string{flagDir}
	} else {
		if gomod, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
			if m := strings.TrimSpace(string(gomod)); m != "" && m != os.DevNull {
				cands = append(cands, filepath.Join(filepath.Dir(m), "cmd", "moonbench", "testdata"))
			}
		}
		cands = append(cands, "testdata")
	}
	var lastErr error
	for _, d := range cands {
		abs, err := filepath.Abs(d)
		if err != nil {
			lastErr = err
			continue
		}
		ok := true
		for _, f := range need {
			if _, err := os.Stat(filepath.Join(abs, f)); err != nil {
				lastErr, ok = fmt.Errorf("no %s in %s (-testdata): %w", f, abs, err), false
				break
			}
		}
		if ok {
			return abs, nil
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no testdata folder found: give -testdata")
	}
	return "", lastErr
}

// runAB runs the session: every slot of abOrder, one JSON line each, then
// the tables. It fails when a side of a scenario has no run that worked
// (nothing to compare) or the session was interrupted.
func runAB(ctx context.Context, o *abOpts, stdout, stderr io.Writer) error {
	began := time.Now()
	var need []string
	for _, sc := range o.scenarios {
		need = append(need, sc.config)
	}
	td, err := findTestdata(o.testdata, need)
	if err != nil {
		return err
	}
	if portBusy(o.port) {
		return fmt.Errorf("127.0.0.1:%d is already in use (-port): stop what listens there or pick another port", o.port)
	}
	for _, sc := range o.scenarios {
		if sc.kind == "idle" {
			if _, err := checkFDs(o.idleConns, 64); err != nil {
				return fmt.Errorf("idle: %w", err)
			}
		}
	}
	if o.out == "" {
		if o.out, err = os.MkdirTemp("", "moonbench-ab-"); err != nil {
			return fmt.Errorf("making the output folder: %w", err)
		}
	} else if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("making -out: %w", err)
	}
	if o.out, err = filepath.Abs(o.out); err != nil {
		return fmt.Errorf("-out: %w", err)
	}
	a := &abRunner{o: o, log: stderr, testdata: td}
	switch o.counters {
	case "perf", "auto":
		perr := probePerf(ctx)
		if perr != nil && o.counters == "perf" {
			return fmt.Errorf("-counters perf: %w", perr)
		}
		a.perf = perr == nil
		if perr != nil {
			logf(stderr, "ab: perf is not usable (%v): counting from /proc", perr)
		}
	}
	if a.results, err = os.Create(filepath.Join(o.out, "ab.jsonl")); err != nil {
		return fmt.Errorf("creating ab.jsonl: %w", err)
	}
	defer a.results.Close()
	slots := abOrder(o.repeat, len(o.scenarios))
	load0 := loadAvg()
	logf(stderr, "ab: %d runs of about %s each (%s window); base %s, head %s; output in %s; load average %s",
		len(slots), (abWarmup + o.duration + 4*time.Second).Round(time.Second), o.duration, o.base, o.head, o.out, load0)

	var runs []*abRun
	for i, sl := range slots {
		if ctx.Err() != nil {
			break
		}
		r := a.runOne(ctx, sl)
		runs = append(runs, r)
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encoding run %d: %w", i+1, err)
		}
		if _, err := fmt.Fprintf(a.results, "%s\n", line); err != nil {
			return fmt.Errorf("writing ab.jsonl: %w", err)
		}
		logf(stderr, "ab %d/%d: %s", i+1, len(slots), r.summary())
	}
	fmt.Fprintf(stdout, "moonbench ab: base %s, head %s\n", o.base, o.head)
	fmt.Fprintf(stdout, "%d repeat(s), %s window after %s warm-up, fresh server per run on 127.0.0.1:%d; %s, load average %s at the start, %s at the end; took %s\n",
		o.repeat, o.duration, abWarmup, o.port, machine(), load0, loadAvg(), time.Since(began).Round(time.Second))
	fmt.Fprintln(stdout, counterNote(a.perf))
	failed := printAB(stdout, o.scenarios, runs)
	fmt.Fprintf(stdout, "runs: %s\n", a.results.Name())
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("no run worked on %s", strings.Join(failed, ", "))
	}
	return nil
}

// counterNote says how system calls and context switches were counted:
// /proc's figure is a part of perf's, so the two must not be compared.
func counterNote(perf bool) string {
	if perf {
		return "system calls and context switches: perf stat (" + perfEvents + ") on the server over the window: every system call"
	}
	return "system calls and context switches: /proc (syscr + syscw of /proc/PID/io, *_ctxt_switches of every thread): the system calls count ONLY read/write calls (read, readv, write, writev...), not epoll_wait, futex and the rest"
}

// summary is the run's progress line.
func (r *abRun) summary() string {
	head := fmt.Sprintf("r%d %s %s", r.Repeat, r.Scenario, r.Side)
	if r.failed() {
		return head + ": FAILED: " + r.Error
	}
	s := fmt.Sprintf("%s: %s ops/s (op: %s), server %s µs/op, %s ops per CPU-s, %s CPU, p99 %s, lost %d, errors %d, mismatches %d, syscalls/op %s, ctx switches/op %s",
		head, fmtRate(r.OpsPerS), r.Op, fmtPtr(r.CPUUsPerOp, "%.2f"), fmtPtrRate(r.OpsPerCPUS), fmtPtr(r.ServerCPUPct, "%.0f%%"),
		fmtPtrUs(r.P99Us), r.Lost, r.Errors, r.Mismatches, fmtPtr(r.SyscallsPerOp, "%.3f"), fmtPtr(r.CtxPerOp, "%.4f"))
	if r.RSSPerConn != nil {
		s += ", RSS/conn " + fmtBytes(int64(*r.RSSPerConn))
	}
	if r.OthersCPUPct != nil {
		s += fmt.Sprintf(", others %.0f%% CPU", *r.OthersCPUPct)
	}
	if r.CountError != "" {
		s += "; " + r.CountError
	}
	return s + "; load " + r.Load
}

// runOne starts a fresh server of the slot's side, runs the scenario
// against it, counts its system calls and context switches, and stops it.
// A failure is recorded in the run, not returned: one bad run does not
// end the session.
func (a *abRunner) runOne(ctx context.Context, sl abSlot) *abRun {
	o := a.o
	sc := o.scenarios[sl.scenario]
	bin := o.base
	if sl.side == "head" {
		bin = o.head
	}
	a.seq++
	name := fmt.Sprintf("%03d-r%d-%s-%s", a.seq, sl.repeat, strings.ReplaceAll(sc.name, "@", "-at-"), sl.side)
	r := &abRun{Repeat: sl.repeat, Scenario: sc.name, Side: sl.side, First: sl.first, Binary: bin,
		Started: time.Now().Format(time.RFC3339), ServerLog: filepath.Join(o.out, name+".log"),
		Op: sc.op, Counter: "proc", CountedOver: "window"}
	if a.perf {
		r.Counter = "perf"
	}
	if sc.kind == "idle" {
		r.CountedOver = "run"
	}
	defer func() { r.Load = loadAvg() }()
	if portBusy(o.port) {
		r.Error = fmt.Sprintf("127.0.0.1:%d is in use before the server started", o.port)
		return r
	}
	n, err := a.startServer(ctx, bin, filepath.Join(a.testdata, sc.config), r.ServerLog)
	if err != nil {
		r.Error = "server did not start: " + err.Error()
		return r
	}
	defer n.stop()
	pid := n.cmd.Process.Pid
	r.ServerPID = pid

	args := append([]string{"-scenario", sc.kind, "-url", fmt.Sprintf("ws://127.0.0.1:%d%s", o.port, sc.path),
		"-duration", o.duration.String(), "-warmup", abWarmup.String(), "-pid", strconv.Itoa(pid),
		"-workers", strconv.Itoa(o.workers), "-json", "-label", fmt.Sprintf("ab/%s/%s/r%d", sl.side, sc.name, sl.repeat)},
		sc.args...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		r.Error = fmt.Sprintf("scenario flags %q: %v", args, err)
		return r
	}
	cnt := newABCounter(a.perf, pid)
	stopTimer := func() bool { return false }
	switch sc.kind {
	case "echo", "broadcast":
		cfg.onWindow = func() { cnt.start(o.duration) }
	case "handshake":
		// The scenario has no window hook: its window starts -warmup
		// after it does, which is now to within its setup (microseconds).
		stopTimer = time.AfterFunc(cfg.warmup, func() { cnt.start(o.duration) }).Stop
	case "idle":
		cnt.start(0)
		if a.perf {
			// Give perf a moment to attach before the first dial.
			_ = sleepUntil(ctx, nowNs()+int64(300*time.Millisecond))
		}
	}
	// Bounded whatever the scenario does: warm-up, window, drain, close,
	// and (idle) the dials, with a wide margin.
	runCtx, cancel := context.WithTimeout(ctx, abWarmup+o.duration+90*time.Second)
	res, err := runScenario(runCtx, cfg, a.log)
	cancel()
	stopTimer() // a handshake run that failed before its window
	cnt.stop()
	counts, cerr := cnt.result(o.duration + 15*time.Second)
	select {
	case <-n.done:
		r.Error = "the server exited during the run (log: " + r.ServerLog + ")"
		return r
	default:
	}
	switch {
	case err != nil:
		r.Error = "scenario: " + err.Error()
		return r
	case ctx.Err() != nil:
		r.Error = "interrupted"
		return r
	case runCtx.Err() != nil && errors.Is(runCtx.Err(), context.DeadlineExceeded):
		r.Error = "the run took longer than its bound"
		return r
	}
	r.fill(sc, res, counts, cerr)
	return r
}

// startServer starts bin on the session's port with config, its output in
// logPath (in -out, never in the watched scripts folder), and waits until
// it listens. The process gets SIGTERM if moonbench dies.
func (a *abRunner) startServer(ctx context.Context, bin, config, logPath string) (*mwNode, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the server log: %w", err)
	}
	cmd := exec.Command(bin, "-config", config, "-listen", fmt.Sprintf("127.0.0.1:%d", a.o.port), "-log-level", "warn")
	cmd.Dir = a.o.out
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	lf.Close()
	n := &mwNode{cmd: cmd, done: make(chan struct{}), port: a.o.port, adminPort: a.o.port, log: logPath}
	go func() { _ = cmd.Wait(); close(n.done) }()
	if err := waitListening(ctx, n); err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

// median is the middle of vs (the mean of the two middle ones for an
// even count), NaN for none: with 3 repeats one disturbed run does not
// move it.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// abMetric is one row of a scenario's table.
type abMetric struct {
	name string
	get  func(*abRun) *float64
	fmt  func(float64) string
}

// i64p turns a count into the optional float the metrics read.
func i64p(v int64) *float64 { f := float64(v); return &f }

// abMetrics are the table's rows; ↑ marks a figure where more is better
// (head/base > 1: head better), ↓ one where less is.
var abMetrics = []abMetric{
	{"ops per server-CPU-s ↑", func(r *abRun) *float64 { return r.OpsPerCPUS }, fmtRate},
	{"server CPU µs/op ↓", func(r *abRun) *float64 { return r.CPUUsPerOp }, func(v float64) string { return fmt.Sprintf("%.2f", v) }},
	{"ops/s ↑", func(r *abRun) *float64 { return fp(r.OpsPerS) }, fmtRate},
	{"p50 ↓", func(r *abRun) *float64 { return r.P50Us }, fmtUs},
	{"p99 ↓", func(r *abRun) *float64 { return r.P99Us }, fmtUs},
	{"syscalls/op ↓", func(r *abRun) *float64 { return r.SyscallsPerOp }, func(v float64) string { return fmt.Sprintf("%.3f", v) }},
	{"ctx switches/op ↓", func(r *abRun) *float64 { return r.CtxPerOp }, func(v float64) string { return fmt.Sprintf("%.4f", v) }},
	{"deliveries/write ↑", func(r *abRun) *float64 { return r.DeliveriesPerWrite }, func(v float64) string { return fmt.Sprintf("%.2f", v) }},
	{"RSS/connection ↓", func(r *abRun) *float64 { return r.RSSPerConn }, func(v float64) string { return fmtBytes(int64(v)) }},
	{"server CPU %", func(r *abRun) *float64 { return r.ServerCPUPct }, func(v float64) string { return fmt.Sprintf("%.0f%%", v) }},
	{"others' CPU %", func(r *abRun) *float64 { return r.OthersCPUPct }, func(v float64) string { return fmt.Sprintf("%.0f%%", v) }},
	{"lost+errors+mismatches", func(r *abRun) *float64 { return i64p(r.Lost + r.Errors + r.Mismatches) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
}

// sideMedian is the median of a metric over a side's runs that worked.
func sideMedian(runs []*abRun, side string, get func(*abRun) *float64) float64 {
	var vs []float64
	for _, r := range runs {
		if r.Side != side || r.failed() {
			continue
		}
		if v := get(r); v != nil && !math.IsNaN(*v) {
			vs = append(vs, *v)
		}
	}
	return median(vs)
}

// printAB prints a table per scenario (medians, head/base, every run's
// headline in run order), the failed runs and the runs that lost or
// broke messages. It returns the scenario sides without a run that
// worked.
func printAB(w io.Writer, scenarios []abScenario, runs []*abRun) []string {
	var noRun []string
	var flagged []string
	for _, sc := range scenarios {
		var rs []*abRun
		for _, r := range runs {
			if r.Scenario == sc.name {
				rs = append(rs, r)
			}
		}
		ok := map[string]int{}
		for _, r := range rs {
			if !r.failed() {
				ok[r.Side]++
			}
		}
		fmt.Fprintf(w, "\n%s (op: %s; runs that worked: base %d, head %d)\n", sc.name, sc.op, ok["base"], ok["head"])
		for _, side := range []string{"base", "head"} {
			if ok[side] == 0 {
				noRun = append(noRun, sc.name+" "+side)
			}
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  metric\tbase median\thead median\thead/base")
		for _, m := range abMetrics {
			b, h := sideMedian(rs, "base", m.get), sideMedian(rs, "head", m.get)
			if math.IsNaN(b) && math.IsNaN(h) {
				continue
			}
			f := func(v float64) string {
				if math.IsNaN(v) {
					return "-"
				}
				return m.fmt(v)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.name, f(b), f(h), ratio(h, b))
		}
		_ = tw.Flush()
		// Every run's headline, in run order, by repeat: the spread.
		byRepeat := map[int][]*abRun{}
		var reps []int
		for _, r := range rs {
			if _, seen := byRepeat[r.Repeat]; !seen {
				reps = append(reps, r.Repeat)
			}
			byRepeat[r.Repeat] = append(byRepeat[r.Repeat], r)
		}
		var parts []string
		for _, rep := range reps {
			var p []string
			for _, r := range byRepeat[rep] {
				v := "FAILED"
				if !r.failed() {
					v = fmtPtrRate(r.OpsPerCPUS)
				}
				p = append(p, r.Side+" "+v)
			}
			parts = append(parts, fmt.Sprintf("r%d %s", rep, strings.Join(p, " → ")))
		}
		if sc.kind == "idle" {
			fmt.Fprintln(w, "  (idle: ops are connections opened; CPU is the hold's; system calls and context switches per connection over the whole run)")
		} else {
			fmt.Fprintf(w, "  ops per server-CPU-s by run: %s\n", strings.Join(parts, "; "))
			if line := pairLine(reps, byRepeat); line != "" {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
		for _, r := range rs {
			if r.failed() {
				fmt.Fprintf(w, "  FAILED r%d %s: %s\n", r.Repeat, r.Side, r.Error)
			} else if r.Lost+r.Errors+r.Mismatches > 0 {
				flagged = append(flagged, fmt.Sprintf("%s r%d %s: lost %d, errors %d, mismatches %d", sc.name, r.Repeat, r.Side, r.Lost, r.Errors, r.Mismatches))
			}
		}
	}
	fmt.Fprintln(w)
	if len(flagged) == 0 {
		fmt.Fprintln(w, "lost, errors, mismatches: 0 in every run that worked")
	} else {
		fmt.Fprintf(w, "RUNS WITH LOST/ERRORS/MISMATCHES (must be 0): %s\n", strings.Join(flagged, "; "))
	}
	return noRun
}

// pairLine compares the two sides repeat by repeat: the runs of a
// repeat ran one after the other, so a pair's ratio is spared most of
// the drift that moves a shared machine's rates from one minute to the
// next, and how many pairs went one way says more than the medians when
// the difference is small. "" without a repeat in which both sides ran.
func pairLine(reps []int, byRepeat map[int][]*abRun) string {
	var ratios []string
	ahead, n := 0, 0
	logSum := 0.0
	for _, rep := range reps {
		var b, h *float64
		for _, r := range byRepeat[rep] {
			if r.failed() {
				continue
			}
			if r.Side == "base" {
				b = r.OpsPerCPUS
			} else {
				h = r.OpsPerCPUS
			}
		}
		if b == nil || h == nil || *b <= 0 || *h <= 0 {
			continue
		}
		q := *h / *b
		ratios = append(ratios, fmt.Sprintf("%.2f", q))
		logSum += math.Log(q)
		n++
		if q > 1 {
			ahead++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("head/base by pair: %s; head ahead in %d of %d, geometric mean %.2fx",
		strings.Join(ratios, ", "), ahead, n, math.Exp(logSum/float64(n)))
}

// fmtPtr formats an optional figure, "-" when missing.
func fmtPtr(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

// fmtPtrRate formats an optional rate as fmtRate does.
func fmtPtrRate(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmtRate(*v)
}

// fmtPtrUs formats an optional latency as fmtUs does.
func fmtPtrUs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmtUs(*v)
}
