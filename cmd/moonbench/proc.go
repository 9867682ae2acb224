//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
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

// serverSampler follows the server's CPU time and RSS over a window.
type serverSampler struct {
	pid      int
	cpu0     time.Duration
	t0       time.Time
	mu       sync.Mutex
	maxRSS   int64
	stop     chan struct{}
	done     chan struct{}
	firstErr error
}

// startServerSampler records the server's CPU time now and samples its RSS
// every 250ms until finish. pid 0 gives a no-op sampler.
func startServerSampler(pid int) *serverSampler {
	s := &serverSampler{pid: pid, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if pid == 0 {
		close(s.done)
		return s
	}
	s.cpu0, s.firstErr = procCPU(pid)
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
	rss, err := procRSS(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.firstErr == nil {
			s.firstErr = err
		}
		return
	}
	s.maxRSS = max(s.maxRSS, rss)
}

// serverStats are the server-side figures of a window.
type serverStats struct {
	PID       int     `json:"server_pid"`
	CPUSec    float64 `json:"server_cpu_s"`
	CPUPct    float64 `json:"server_cpu_pct"`
	MaxRSS    int64   `json:"server_rss_max_bytes"`
	SampleErr string  `json:"server_sample_error,omitempty"`
}

// finish ends the window; nil without a pid.
func (s *serverSampler) finish() *serverStats {
	if s.pid == 0 {
		return nil
	}
	cpu1, err := procCPU(s.pid)
	s.sampleRSS()
	close(s.stop)
	<-s.done
	el := time.Since(s.t0)
	st := &serverStats{PID: s.pid}
	s.mu.Lock()
	st.MaxRSS = s.maxRSS
	if s.firstErr == nil {
		s.firstErr = err
	}
	if s.firstErr != nil {
		st.SampleErr = s.firstErr.Error()
	}
	s.mu.Unlock()
	if err == nil {
		st.CPUSec = (cpu1 - s.cpu0).Seconds()
		if el > 0 {
			st.CPUPct = round2(100 * st.CPUSec / el.Seconds())
		}
		st.CPUSec = round2(st.CPUSec)
	}
	return st
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
