//go:build linux

package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sampleEvery is the interval of the server samples.
const sampleEvery = 100 * time.Millisecond

// procSample is one reading of the server process.
type procSample struct {
	rss int64 // VmRSS, bytes
	hwm int64 // VmHWM (peak VmRSS over the process's life), bytes
	fds int   // entries of /proc/PID/fd
}

// readProc reads VmRSS and VmHWM from /proc/PID/status and counts
// /proc/PID/fd.
func readProc(pid int) (procSample, error) {
	var s procSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		var dst *int64
		var rest string
		if r, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			dst, rest = &s.rss, r
		} else if r, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			dst, rest = &s.hwm, r
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
		}
		*dst = kb * 1024
		found++
	}
	if found < 2 {
		// A zombie has no memory lines: the process is gone.
		return s, fmt.Errorf("/proc/%d/status: no VmRSS/VmHWM (process exited?)", pid)
	}
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return s, err
	}
	s.fds = len(names)
	return s, nil
}

// ServerFigures is what the server spent: memory and descriptors before
// the attack, at their peak during it (and the settle period), and after
// the settle period.
type ServerFigures struct {
	PID       int   `json:"server_pid"`
	RSSBefore int64 `json:"rss_before_bytes"`
	// RSSPeak is the largest VmRSS sampled; HWM is the kernel's own peak
	// (VmHWM) at the last sample, which also sees what happened between
	// two samples, and everything since the process started.
	RSSPeak   int64 `json:"rss_peak_bytes"`
	HWM       int64 `json:"hwm_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	FDsBefore int   `json:"fds_before"`
	FDsPeak   int   `json:"fds_peak"`
	FDsAfter  int   `json:"fds_after"`
	Samples   int   `json:"samples"`
	// Exited is set when the process could no longer be read before the
	// end: it exited (or was killed: an out-of-memory kill, a runtime
	// that could not map more memory). The figures are then those of the
	// last sample.
	Exited    bool   `json:"server_exited,omitempty"`
	SampleErr string `json:"sample_error,omitempty"`
}

// sampler reads the server every sampleEvery until finish.
type sampler struct {
	pid  int
	mu   sync.Mutex
	fig  ServerFigures
	last procSample
	stop chan struct{}
	done chan struct{}
}

// startSampler takes the "before" sample and starts sampling; pid 0 gives
// a sampler that does nothing.
func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	if pid == 0 {
		close(s.done)
		return s
	}
	s.fig.PID = pid
	if p, ok := s.sample(); ok {
		s.fig.RSSBefore, s.fig.FDsBefore = p.rss, p.fds
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

// sample reads the server once and folds the reading into the peaks.
func (s *sampler) sample() (procSample, bool) {
	p, err := readProc(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.fig.SampleErr == "" {
			s.fig.SampleErr = err.Error()
		}
		s.fig.Exited = true
		return p, false
	}
	s.fig.Samples++
	s.last = p
	s.fig.RSSPeak = max(s.fig.RSSPeak, p.rss)
	s.fig.FDsPeak = max(s.fig.FDsPeak, p.fds)
	s.fig.HWM = max(s.fig.HWM, p.hwm)
	return p, true
}

// finish takes the "after" sample and stops; nil without a pid.
func (s *sampler) finish() *ServerFigures {
	if s.pid == 0 {
		return nil
	}
	p, ok := s.sample()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fig
	if ok {
		f.RSSAfter, f.FDsAfter = p.rss, p.fds
	} else {
		f.RSSAfter, f.FDsAfter = s.last.rss, s.last.fds
	}
	return &f
}

// byteSize is a flag holding a size: an integer of bytes, or one with a
// B, KiB, MiB or GiB suffix (also KB, MB, GB, as multiples of 1024, as
// moonwire's config reads them).
type byteSize int64

// String formats the size in bytes.
func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

// Set parses a size.
func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("bad size %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// round2 rounds to two decimals.
func round2(v float64) float64 { return math.Round(v*100) / 100 }
