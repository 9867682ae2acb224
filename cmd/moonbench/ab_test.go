//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeExecutables makes two distinct executable files and a plain one, so
// that flag checks need no real moonwire.
func fakeExecutables(t *testing.T) (a, b, plain string) {
	t.Helper()
	dir := t.TempDir()
	a, b, plain = filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "plain")
	for _, f := range []string{a, b} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return a, b, plain
}

func TestABFlags(t *testing.T) {
	t.Parallel()
	a, b, plain := fakeExecutables(t)
	o, err := parseABFlags([]string{"-base", a, "-head", b}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sc := range o.scenarios {
		names = append(names, sc.name)
	}
	if strings.Join(names, ",") != abDefaultScenarios || o.repeat != 3 || o.duration != 8*time.Second || o.port != 18965 || o.idleConns != 19000 {
		t.Errorf("defaults: %v %+v", names, o)
	}
	if !filepath.IsAbs(o.base) || o.base != a {
		t.Errorf("base %q, want %q", o.base, a)
	}
	byName := map[string]abScenario{}
	for _, sc := range o.scenarios {
		byName[sc.name] = sc
	}
	if got := strings.Join(byName["broadcast@500"].args, " "); !strings.Contains(got, "-subs 1000") || !strings.HasSuffix(got, "-rate 500") {
		t.Errorf("broadcast@500 args %q", got)
	}
	if got := strings.Join(byName["broadcast"].args, " "); !strings.HasSuffix(got, "-rate 0") || !strings.Contains(got, "-inflight 32") {
		t.Errorf("broadcast args %q", got)
	}
	if sc := byName["handshake-lua"]; sc.config != "auth.toml" || sc.path != "/auth" || !strings.Contains(strings.Join(sc.args, " "), "X-Auth-Token: token_123") {
		t.Errorf("handshake-lua %+v", sc)
	}
	o, err = parseABFlags([]string{"-base", a, "-head", a, "-allow-same", "-scenarios", "idle, handshake", "-idle-conns", "50",
		"-repeat", "20", "-duration", "60s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.scenarios) != 2 || o.scenarios[0].config != "idle-room.toml" || strings.Join(o.scenarios[0].args, " ") != "-conns 50" {
		t.Errorf("idle: %+v", o.scenarios)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"-head", b}, "-base is required"},
		{[]string{"-base", a}, "-head is required"},
		{[]string{"-base", a, "-head", filepath.Join(filepath.Dir(a), "missing")}, "no such file"},
		{[]string{"-base", plain, "-head", b}, "not executable"},
		{[]string{"-base", a, "-head", filepath.Dir(a)}, "not a regular file"},
		{[]string{"-base", a, "-head", a}, "same file"},
		{[]string{"-base", a, "-head", b, "-repeat", "0"}, "-repeat"},
		{[]string{"-base", a, "-head", b, "-repeat", "21"}, "-repeat"},
		{[]string{"-base", a, "-head", b, "-duration", "61s"}, "-duration"},
		{[]string{"-base", a, "-head", b, "-duration", "0s"}, "-duration"},
		{[]string{"-base", a, "-head", b, "-port", "80"}, "-port"},
		{[]string{"-base", a, "-head", b, "-scenarios", "echo,nope"}, "unknown scenario"},
		{[]string{"-base", a, "-head", b, "-scenarios", "echo,echo"}, "twice"},
		{[]string{"-base", a, "-head", b, "-scenarios", "echo,,idle"}, "empty"},
		{[]string{"-base", a, "-head", b, "-scenarios", "broadcast@0"}, "positive"},
		{[]string{"-base", a, "-head", b, "-scenarios", "broadcast@x"}, "positive"},
		{[]string{"-base", a, "-head", b, "-counters", "strace"}, "-counters"},
		{[]string{"-base", a, "-head", b, "extra"}, "unexpected"},
	}
	for _, c := range bad {
		_, err := parseABFlags(c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}

// Base and head run back to back per scenario, the first of each pair
// alternating from one repeat to the next.
func TestABOrder(t *testing.T) {
	t.Parallel()
	var got []string
	for _, s := range abOrder(3, 2) {
		mark := ""
		if s.first {
			mark = "*"
		}
		got = append(got, fmt.Sprintf("%d%c%s%s", s.repeat, 'a'+rune(s.scenario), s.side[:1], mark))
	}
	want := "1ab* 1ah 1bb* 1bh 2ah* 2ab 2bh* 2bb 3ab* 3ah 3bb* 3bh"
	if strings.Join(got, " ") != want {
		t.Errorf("order\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{10, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its argument")
	}
}

// abTestRun is a run that worked, with the figures the table reads.
func abTestRun(scenario, side string, repeat int, opsPerCPU, cpuUs, p99, sys float64) *abRun {
	return &abRun{Scenario: scenario, Side: side, Repeat: repeat, Op: "round trip", Ops: 1000, OpsPerS: 500,
		OpsPerCPUS: fp(opsPerCPU), CPUUsPerOp: fp(cpuUs), P50Us: fp(p99 / 4), P99Us: fp(p99),
		SyscallsPerOp: fp(sys), CtxPerOp: fp(0.01)}
}

// tableRow finds a metric's row of a scenario's table in out.
func tableRow(t *testing.T, out, scenario, metric string) []string {
	t.Helper()
	_, sec, ok := strings.Cut(out, "\n"+scenario+" (")
	if !ok {
		t.Fatalf("no table for %s in:\n%s", scenario, out)
	}
	sec, _, _ = strings.Cut(sec, "\n\n")
	for _, line := range strings.Split(sec, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), metric); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no %q row for %s in:\n%s", metric, scenario, sec)
	return nil
}

func TestABTable(t *testing.T) {
	t.Parallel()
	scs := []abScenario{{name: "echo", kind: "echo", op: "round trip"}, {name: "broadcast@100", kind: "broadcast", op: "delivery"}}
	runs := []*abRun{
		abTestRun("echo", "base", 1, 100e3, 10, 2000, 2),
		abTestRun("echo", "head", 1, 130e3, 7.5, 1000, 1),
		abTestRun("echo", "head", 2, 120e3, 8, 1500, 1),
		abTestRun("echo", "base", 2, 300e3, 9, 1000, 2),
		abTestRun("echo", "base", 3, 200e3, 8, 3000, 2),
		abTestRun("echo", "head", 3, 110e3, 9, 2000, 1),
		abTestRun("broadcast@100", "base", 1, 50e3, 20, 10e3, 1),
		{Scenario: "broadcast@100", Side: "head", Repeat: 1, Error: "server did not start: boom"},
	}
	runs[1].Lost, runs[1].Errors = 2, 1
	var out bytes.Buffer
	noRun := printAB(&out, scs, runs)
	s := out.String()
	// base 100k, 300k, 200k: median 200k; head 130k, 120k, 110k: 120k.
	if got := tableRow(t, s, "echo", "ops per server-CPU-s ↑"); strings.Join(got, " ") != "200.0k 120.0k 0.60x" {
		t.Errorf("headline row %q", got)
	}
	if got := tableRow(t, s, "echo", "server CPU µs/op ↓"); strings.Join(got, " ") != "9.00 8.00 0.89x" {
		t.Errorf("CPU row %q", got)
	}
	if got := tableRow(t, s, "echo", "p99 ↓"); strings.Join(got, " ") != "2.00ms 1.50ms 0.75x" {
		t.Errorf("p99 row %q", got)
	}
	if got := tableRow(t, s, "echo", "syscalls/op ↓"); strings.Join(got, " ") != "2.000 1.000 0.50x" {
		t.Errorf("syscalls row %q", got)
	}
	if got := tableRow(t, s, "echo", "ctx switches/op ↓"); strings.Join(got, " ") != "0.0100 0.0100 1.00x" {
		t.Errorf("ctx row %q", got)
	}
	for _, want := range []string{
		"ops per server-CPU-s by run: r1 base 100.0k → head 130.0k; r2 head 120.0k → base 300.0k; r3 base 200.0k → head 110.0k",
		// 1.30 × 0.40 × 0.55 = 0.286, whose cube root is 0.659.
		"head/base by pair: 1.30, 0.40, 0.55; head ahead in 1 of 3, geometric mean 0.66x",
		"runs that worked: base 3, head 3",
		"runs that worked: base 1, head 0",
		"FAILED r1 head: server did not start: boom",
		"RUNS WITH LOST/ERRORS/MISMATCHES (must be 0): echo r1 head: lost 2, errors 1, mismatches 0",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	// Only base worked for broadcast@100: head medians are missing.
	if got := tableRow(t, s, "broadcast@100", "ops per server-CPU-s ↑"); strings.Join(got, " ") != "50.0k - -" {
		t.Errorf("broadcast headline row %q", got)
	}
	if strings.Join(noRun, ",") != "broadcast@100 head" {
		t.Errorf("sides without a run: %q", noRun)
	}
	out.Reset()
	if noRun := printAB(&out, scs[:1], runs[2:6]); len(noRun) != 0 || !strings.Contains(out.String(), "0 in every run that worked") {
		t.Errorf("clean runs: %q\n%s", noRun, out.String())
	}
}

// fill turns a scenario's result into per-operation figures: CPU per op,
// ops per CPU second, and the counts at the window's rate.
func TestABFill(t *testing.T) {
	t.Parallel()
	res := &echoResult{common: common{WindowS: 2, serverStats: &serverStats{CPUSec: 0.5, CPUPct: 25}, machineStats: &machineStats{OthersPct: 12}},
		RoundTrips: 1000, RTPerSec: 500, traffic: traffic{Mismatches: 1, Protocol: 2}, latency: latency{P50: 100, P99: 900}}
	r := &abRun{}
	r.fill(abScenario{name: "echo", kind: "echo", op: "round trip"}, res, winCounts{syscalls: 3000, ctxsw: 100, seconds: 2}, nil)
	if r.Error != "" || r.Ops != 1000 || *r.CPUUsPerOp != 500 || *r.OpsPerCPUS != 2000 || *r.P99Us != 900 || *r.OthersCPUPct != 12 {
		t.Errorf("fill: %+v", r)
	}
	if *r.SyscallsPerOp != 3 || *r.CtxPerOp != 0.1 || r.Errors != 2 || r.Mismatches != 1 {
		t.Errorf("per op: syscalls %v ctx %v errors %d mismatches %d", *r.SyscallsPerOp, *r.CtxPerOp, r.Errors, r.Mismatches)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Result, &m); err != nil || m["round_trips"] != float64(1000) {
		t.Errorf("result %s: %v", r.Result, err)
	}
	// idle: counted over the whole run, per connection; no CPU per op.
	idle := &idleResult{common: common{serverStats: &serverStats{CPUSec: 0.1}}, Opened: 200, OpenPerS: 1000, RSSPerConn: fp(4096)}
	r = &abRun{}
	r.fill(abScenario{name: "idle", kind: "idle", op: "connection"}, idle, winCounts{syscalls: 2000, ctxsw: 50}, nil)
	if r.Error != "" || *r.SyscallsPerOp != 10 || *r.CtxPerOp != 0.25 || r.CPUUsPerOp != nil || *r.RSSPerConn != 4096 {
		t.Errorf("idle fill: %+v", r)
	}
	r = &abRun{}
	r.fill(abScenario{name: "echo", kind: "echo", op: "round trip"}, &echoResult{}, winCounts{}, fmt.Errorf("no perf"))
	if !r.failed() || !strings.Contains(r.CountError, "no perf") {
		t.Errorf("no ops: %+v", r)
	}
}

func TestParsePerfCSV(t *testing.T) {
	t.Parallel()
	out := `# started on Sun Dec  6 17:52:15 2026

764069,,raw_syscalls:sys_enter,1275158262,100.00,,
6978,,context-switches,1275158262,100.00,,
`
	sys, ctx, err := parsePerfCSV(out)
	if err != nil || sys != 764069 || ctx != 6978 {
		t.Errorf("parsePerfCSV = %d, %d, %v", sys, ctx, err)
	}
	sys, ctx, err = parsePerfCSV("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n<not counted>,,context-switches,0,100.00,,\n")
	if err != nil || sys != 0 || ctx != 0 {
		t.Errorf("not counted: %d, %d, %v", sys, ctx, err)
	}
	for _, bad := range []string{
		"<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n12,,context-switches,0,100.00,,\n",
		"12,,context-switches,5,100.00,,\n",
		"event syntax error: 'raw_syscalls:sys_enter'\n",
		"x1,,raw_syscalls:sys_enter,0,100.00,,\n1,,context-switches,0,100.00,,\n",
	} {
		if _, _, err := parsePerfCSV(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseProcCounters(t *testing.T) {
	t.Parallel()
	status := "Name:\tmoonwire\nState:\tS (sleeping)\nThreads:\t7\nvoluntary_ctxt_switches:\t318\nnonvoluntary_ctxt_switches:\t8\n"
	if n, err := parseCtxSwitches(status); err != nil || n != 326 {
		t.Errorf("parseCtxSwitches = %d, %v", n, err)
	}
	if _, err := parseCtxSwitches("Name:\tx\nvoluntary_ctxt_switches:\t3\n"); err == nil {
		t.Error("half a status: no error")
	}
	io := "rchar: 9412\nwchar: 879\nsyscr: 114\nsyscw: 83\nread_bytes: 5840896\n"
	if n, err := parseIOSyscalls(io); err != nil || n != 197 {
		t.Errorf("parseIOSyscalls = %d, %v", n, err)
	}
	if _, err := parseIOSyscalls("rchar: 1\nsyscr: x\nsyscw: 1\n"); err == nil {
		t.Error("bad syscr: no error")
	}
	// This very process, through the counter: reading a file is a read
	// system call.
	c := newABCounter(false, os.Getpid())
	c.start(0)
	for range 20 {
		if _, err := os.ReadFile("/proc/self/stat"); err != nil {
			t.Fatal(err)
		}
	}
	c.stop()
	got, err := c.result(10 * time.Second)
	if err != nil || got.syscalls < 20 || got.seconds != 0 {
		t.Errorf("counter on this process: %+v, %v", got, err)
	}
	if _, err := newABCounter(false, os.Getpid()).result(time.Second); err == nil {
		t.Error("a counter never started gave counts")
	}
}

// TestAB runs ab end to end: one moonwire build as base and head, echo and
// broadcast@100 once each, 1 s windows.
func TestAB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds moonwire and runs 4 short benchmarks")
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		t.Skipf("no go toolchain to build moonwire with (%v)", err)
	}
	bin := filepath.Join(t.TempDir(), "moonwire")
	build := exec.Command("go", "build", "-o", bin, "./cmd/moonwire")
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/moonwire: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	out := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	code := run([]string{"ab", "-base", bin, "-head", bin, "-allow-same", "-scenarios", "echo,broadcast@100",
		"-repeat", "1", "-duration", "1s", "-port", strconv.Itoa(port), "-out", out, "-testdata", "testdata"}, &stdout, &stderr)
	s := stdout.String()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, s, stderr.String())
	}
	for _, want := range []string{"echo (op: round trip; runs that worked: base 1, head 1)",
		"broadcast@100 (op: delivery; runs that worked: base 1, head 1)", "head/base", "ops per server-CPU-s ↑",
		"syscalls/op ↓", "ctx switches/op ↓", "deliveries/write ↑", "0 in every run that worked", "system calls and context switches: "} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in the output:\n%s", want, s)
		}
	}
	f, err := os.Open(filepath.Join(out, "ab.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, sc.Text())
		}
		order = append(order, fmt.Sprintf("%v/%v", m["scenario"], m["side"]))
		if m["error"] != nil {
			t.Errorf("%s failed: %v", order[len(order)-1], m["error"])
			continue
		}
		wantPositive(t, m, "ops", "ops_per_s", "ops_per_server_cpu_s", "server_cpu_us_per_op", "p99_us", "syscalls_per_op")
		wantZero(t, m, "lost", "errors", "mismatches")
		if _, ok := m["ctx_switches_per_op"].(float64); !ok {
			t.Errorf("%s: no ctx_switches_per_op: %v", order[len(order)-1], m)
		}
		if c := m["counter"]; c != "perf" && c != "proc" {
			t.Errorf("counter %v", c)
		}
		if res, _ := m["result"].(map[string]any); res == nil || res["server_pid"] != m["server_pid"] {
			t.Errorf("result %v", m["result"])
		}
		if log, _ := m["server_log"].(string); !strings.HasPrefix(log, out) {
			t.Errorf("server log %q not in -out", log)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "echo/base echo/head broadcast@100/base broadcast@100/head" {
		t.Errorf("runs %s", got)
	}
}
