//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/cmd/internal/toolflag"
	"golang.org/x/sys/unix"
)

// epoch is the origin of every timestamp moonbench puts in a payload; Go's
// time.Since reads the monotonic clock.
var epoch = time.Now()

// nowNs is the monotonic time in nanoseconds since epoch.
func nowNs() int64 { return int64(time.Since(epoch)) }

var clkTck = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
})

// procCPU returns the CPU time (user + system) of process pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration((ut + st) * int64(time.Second) / clkTck()), nil
}

// procWrites returns the write system calls process pid has made, as
// /proc/PID/io counts them (syscw: write, writev and their kin, not
// sendto or sendmsg, which moonwire uses for a single frame). It needs the
// right to trace pid (the same user, or root).
func procWrites(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	return sumFields(string(b), fmt.Sprintf("/proc/%d/io", pid), "syscw")
}

// sumFields sums the integer values of keys in text, lines of "key:
// value" as /proc writes them (io, status); every key must be there. what
// names the text in errors.
func sumFields(text, what string, keys ...string) (int64, error) {
	var sum int64
	n := 0
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s %s: %w", what, k, err)
		}
		sum += x
		n++
	}
	if n != len(keys) {
		return 0, fmt.Errorf("%s: not every one of %s", what, strings.Join(keys, ", "))
	}
	return sum, nil
}

// writeEvents are the system calls a server writes to sockets with,
// counted by perf stat when it works (writeCount). io_uring_enter is one:
// moonwire's flush workers submit the sends of many sockets with one.
const writeEvents = "syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_io_uring_enter"

// perfStatSelf runs perf stat on this very process for a moment, counting
// events: whether perf works here (installed, allowed by
// perf_event_paranoid, tracefs mounted) for those events, and its output
// to check that they were counted.
func perfStatSelf(ctx context.Context, events string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "perf", "stat", "-e", events, "-x,", "-p", strconv.Itoa(os.Getpid()), "--", "sleep", "0.2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("perf stat: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// perfWrites says, once per process, whether perf stat can count
// writeEvents here.
var perfWrites = sync.OnceValue(func() bool {
	out, err := perfStatSelf(context.Background(), writeEvents)
	if err != nil {
		return false
	}
	_, err = parseWriteCounts(out)
	return err == nil
})

// writeCount counts one process's write system calls over a window:
// with perf stat (every call that writes to a socket) when it works,
// else from /proc/PID/io (write and writev only).
type writeCount struct {
	pid  int
	cmd  *exec.Cmd
	out  bytes.Buffer
	proc int64 // syscw at the start; -1: unreadable
}

func startWriteCount(pid int) *writeCount {
	w := &writeCount{pid: pid, proc: -1}
	if perfWrites() {
		w.cmd = exec.Command("perf", "stat", "-e", writeEvents, "-x,", "-p", strconv.Itoa(pid))
		w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if w.cmd.Start() == nil {
			return w
		}
		w.cmd = nil
	}
	if n, err := procWrites(pid); err == nil {
		w.proc = n
	}
	return w
}

// finish ends the count: the writes since the start, or nil when they
// could not be counted.
func (w *writeCount) finish() *int64 {
	if w.cmd != nil {
		// On SIGINT perf stat prints its counts and exits.
		_ = w.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = w.cmd.Process.Kill()
			<-done
			return nil
		}
		n, err := parseWriteCounts(w.out.String())
		if err != nil {
			return nil
		}
		return &n
	}
	if w.proc < 0 {
		return nil
	}
	n, err := procWrites(w.pid)
	if err != nil {
		return nil
	}
	n -= w.proc
	return &n
}

// parseWriteCounts sums writeEvents' counts in perf stat -x, output;
// every one of them must be there.
func parseWriteCounts(text string) (int64, error) {
	counts, err := perfCounts(text)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, ev := range strings.Split(writeEvents, ",") {
		n, ok := counts[ev]
		if !ok {
			return 0, fmt.Errorf("perf stat: no %s in its output: %q", ev, strings.TrimSpace(text))
		}
		sum += n
	}
	return sum, nil
}

// perfCounts reads perf stat -x, output, VALUE,UNIT,EVENT,RUNTIME,PCT,...
// per event, into each event's count. A counter whose tasks never ran
// reads "<not counted>" (0); one the kernel cannot count, "<not
// supported>" (an error).
func perfCounts(text string) (map[string]int64, error) {
	counts := map[string]int64{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 3 || f[2] == "" {
			continue
		}
		v := strings.TrimSpace(f[0])
		switch {
		case strings.HasPrefix(v, "<not counted>"):
			counts[f[2]] = 0
		case strings.HasPrefix(v, "<"):
			return nil, fmt.Errorf("perf stat: %s %s", f[2], v)
		default:
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("perf stat: %s: bad count %q", f[2], v)
			}
			counts[f[2]] = int64(n)
		}
	}
	return counts, nil
}

// procRSS returns VmRSS of process pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// selfCPU is this process's CPU time (user + system).
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fdReserve is what the process keeps besides the connections: stdio,
// epoll and eventfds, the baseline child's pipes, dials in progress.
const fdReserve = 64

// checkFDs fails clearly when n connections cannot fit under the
// descriptor limit.
func checkFDs(n, dialConcurrency int) (uint64, error) {
	lim, err := toolflag.RaiseFDLimit()
	if err != nil {
		return 0, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	need := uint64(n + fdReserve + dialConcurrency)
	if need > lim {
		most := int(lim) - fdReserve - dialConcurrency
		return lim, fmt.Errorf("cannot hold %d connections: RLIMIT_NOFILE hard limit is %d "+
			"descriptors per process (soft raised to hard), and moonbench needs one per connection "+
			"plus %d; use -conns %d or less, or raise the hard limit (ulimit -Hn) as root", n, lim,
			fdReserve+dialConcurrency, most)
	}
	return lim, nil
}

// serverSampler follows the CPU time and RSS of the server's processes
// (one, or a cluster's nodes) over a window.
type serverSampler struct {
	pids     []int
	cpu0     []time.Duration
	writes   []*writeCount
	t0       time.Time
	mu       sync.Mutex
	maxRSS   []int64
	stop     chan struct{}
	done     chan struct{}
	firstErr error
}

// startServerSampler records the CPU time of every pid now and samples
// their RSS every 250ms until finish. No pids give a no-op sampler.
func startServerSampler(pids []int) *serverSampler {
	s := &serverSampler{pids: pids, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if len(pids) == 0 {
		close(s.done)
		return s
	}
	s.cpu0 = make([]time.Duration, len(pids))
	s.writes = make([]*writeCount, len(pids))
	s.maxRSS = make([]int64, len(pids))
	for i, pid := range pids {
		var err error
		if s.cpu0[i], err = procCPU(pid); err != nil && s.firstErr == nil {
			s.firstErr = err
		}
		s.writes[i] = startWriteCount(pid)
	}
	s.sampleRSS()
	go func() {
		defer close(s.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sampleRSS()
			}
		}
	}()
	return s
}

func (s *serverSampler) sampleRSS() {
	for i, pid := range s.pids {
		rss, err := procRSS(pid)
		s.mu.Lock()
		if err != nil {
			if s.firstErr == nil {
				s.firstErr = err
			}
		} else {
			s.maxRSS[i] = max(s.maxRSS[i], rss)
		}
		s.mu.Unlock()
	}
}

// serverStats are the server-side figures of a window. For several
// processes (-pid A,B,C) CPU is their sum, RSS the sum of each one's
// maximum, PID the first one's, and Nodes holds each one's figures.
type serverStats struct {
	PID       int     `json:"server_pid"`
	CPUSec    float64 `json:"server_cpu_s"`
	CPUPct    float64 `json:"server_cpu_pct"`
	MaxRSS    int64   `json:"server_rss_max_bytes"`
	SampleErr string  `json:"server_sample_error,omitempty"`
	// Writes are the write system calls made in the window (nil when
	// they cannot be counted): on a fan-out, how well the server batches
	// messages to one connection into one write. perf stat counts them
	// when it works; else /proc/PID/io, which misses sendto and sendmsg.
	Writes *int64        `json:"server_write_syscalls,omitempty"`
	Nodes  []serverStats `json:"server_nodes,omitempty"`
}

// finish ends the window; nil without pids.
func (s *serverSampler) finish() *serverStats {
	if len(s.pids) == 0 {
		return nil
	}
	cpu1 := make([]time.Duration, len(s.pids))
	errs := make([]error, len(s.pids))
	writes := make([]*int64, len(s.pids))
	for i, pid := range s.pids {
		cpu1[i], errs[i] = procCPU(pid)
		writes[i] = s.writes[i].finish()
	}
	s.sampleRSS()
	close(s.stop)
	<-s.done
	el := time.Since(s.t0).Seconds()
	nodes := make([]serverStats, len(s.pids))
	sum := &serverStats{PID: s.pids[0]}
	s.mu.Lock()
	for i, pid := range s.pids {
		n := serverStats{PID: pid, MaxRSS: s.maxRSS[i], Writes: writes[i]}
		if errs[i] == nil {
			cpu := (cpu1[i] - s.cpu0[i]).Seconds()
			sum.CPUSec += cpu
			n.CPUSec = round2(cpu)
			if el > 0 {
				n.CPUPct = round2(100 * cpu / el)
			}
		} else {
			n.SampleErr = errs[i].Error()
			if s.firstErr == nil {
				s.firstErr = errs[i]
			}
		}
		sum.MaxRSS += n.MaxRSS
		nodes[i] = n
	}
	if s.firstErr != nil {
		sum.SampleErr = s.firstErr.Error()
	}
	s.mu.Unlock()
	if el > 0 {
		sum.CPUPct = round2(100 * sum.CPUSec / el)
	}
	sum.CPUSec = round2(sum.CPUSec)
	var w int64
	for _, n := range nodes {
		if n.Writes == nil {
			w = -1
			break
		}
		w += *n.Writes
	}
	if w >= 0 {
		sum.Writes = &w
	}
	if len(nodes) > 1 {
		sum.Nodes = nodes
	}
	return sum
}

// procRSSSum is the RSS of every pid, summed.
func procRSSSum(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		v, err := procRSS(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// machineCPU reads the first line of /proc/stat: the time every CPU spent
// running processes (user, nice, system), in interrupts (irq, softirq:
// on loopback mostly the TCP traffic of the run itself, which no
// process's utime and stime include) and stolen by the hypervisor.
func machineCPU() (proc, irq, steal time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0, errors.New("/proc/stat: unexpected format")
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, 0, err
		}
	}
	tick := func(n int64) time.Duration { return time.Duration(n * int64(time.Second) / clkTck()) }
	// user nice system idle iowait irq softirq steal
	return tick(v[0] + v[1] + v[2]), tick(v[5] + v[6]), tick(v[7]), nil
}

// machineStats is the whole machine over a window, in % of one core like
// the other CPU figures. OthersPct is the process time that was neither
// moonbench's, the server's nor the broker's: other processes, which
// disturb the measurement.
type machineStats struct {
	BusyPct   float64 `json:"machine_cpu_pct"`
	IRQPct    float64 `json:"machine_irq_pct"`
	StealPct  float64 `json:"machine_steal_pct"`
	OthersPct float64 `json:"others_cpu_pct"`
	CPUs      int     `json:"machine_cpus"`
}

type machineSampler struct {
	proc0, irq0, steal0 time.Duration
	t0                  time.Time
	err                 error
}

func startMachineSampler() machineSampler {
	m := machineSampler{t0: time.Now()}
	m.proc0, m.irq0, m.steal0, m.err = machineCPU()
	return m
}

// finish is the window's figures; ours is the CPU seconds of moonbench,
// the server and the broker.
func (m machineSampler) finish(ours float64) *machineStats {
	proc, irq, steal, err := machineCPU()
	el := time.Since(m.t0).Seconds()
	if m.err != nil || err != nil || el <= 0 {
		return nil
	}
	p, i := (proc - m.proc0).Seconds(), (irq - m.irq0).Seconds()
	return &machineStats{
		BusyPct:   round2(100 * (p + i) / el),
		IRQPct:    round2(100 * i / el),
		StealPct:  round2(100 * (steal - m.steal0).Seconds() / el),
		OthersPct: round2(100 * max(0, p-ours) / el),
		CPUs:      runtime.NumCPU(),
	}
}

// clientStats are moonbench's own figures over the same window: CPU time
// and heap allocations (objects), the evidence that the generator has room
// to spare and allocates nothing per message.
type clientStats struct {
	CPUSec float64 `json:"client_cpu_s"`
	CPUPct float64 `json:"client_cpu_pct"`
	Allocs uint64  `json:"client_allocs"`
}

type clientSampler struct {
	cpu0    time.Duration
	t0      time.Time
	allocs0 uint64
}

func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func startClientSampler() clientSampler {
	return clientSampler{cpu0: selfCPU(), t0: time.Now(), allocs0: heapAllocs()}
}

func (c clientSampler) finish() clientStats {
	cpu := (selfCPU() - c.cpu0).Seconds()
	el := time.Since(c.t0).Seconds()
	st := clientStats{CPUSec: round2(cpu), Allocs: heapAllocs() - c.allocs0}
	if el > 0 {
		st.CPUPct = round2(100 * cpu / el)
	}
	return st
}
