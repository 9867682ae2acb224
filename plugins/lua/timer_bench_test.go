//go:build unix

package lua

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkTimerCPU measures what 1,000 timer.every(0.01) cost the whole
// process: each iteration is a 200ms window of wall time, and the process's
// CPU time (user + system, every goroutine) over the windows is reported as
// cpu-% of one core. firings/s checks the timers really ran at their rate
// (100,000/s when on time). ns/op is the window and means nothing.
//
//	go test -run '^$' -bench TimerCPU -benchtime 10x ./plugins/lua/
func BenchmarkTimerCPU(b *testing.B) {
	s := serve(b, `
return { on_start = function()
  for i = 1, 1000 do timer.every(0.01, function() probe.hit() end) end
end }
`, Options{}, nil)
	// Warm up: every timer has fired a few times.
	waitFor(b, "the timers to fire", func() bool { return s.hits.Load() >= 5000 })

	const window = 200 * time.Millisecond
	var cpu, wall time.Duration
	var hits int64
	for b.Loop() {
		c0, t0, h0 := cpuTime(b), time.Now(), s.hits.Load()
		time.Sleep(window)
		cpu += cpuTime(b) - c0
		wall += time.Since(t0)
		hits += s.hits.Load() - h0
	}
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
	b.ReportMetric(float64(hits)/wall.Seconds(), "firings/s")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
