//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
)

// result is what a scenario returns: a JSON object (one line) and the rows
// of the human-readable table.
type result interface {
	rows() [][2]string
}

// common are the fields every scenario reports.
type common struct {
	Scenario   string  `json:"scenario"`
	Label      string  `json:"label,omitempty"`
	URL        string  `json:"url"`
	Baseline   string  `json:"baseline,omitempty"`
	Workers    int     `json:"workers"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	FDLimit    uint64  `json:"fd_limit"`
	WindowS    float64 `json:"window_s"`
	WarmupS    float64 `json:"warmup_s"`
	*serverStats
	// Broker is -broker-pid's process (Redis, NATS) over the same window.
	Broker *serverStats `json:"broker,omitempty"`
	clientStats
	// The whole machine over the window (echo and broadcast): others'
	// CPU use disturbs the figures.
	*machineStats
	// CPU microseconds per operation (round trip, delivery, connect), the
	// client's and the server's: the generator is not the bottleneck while
	// its figure is well below the server's.
	ClientUsPerOp *float64 `json:"client_cpu_us_per_op,omitempty"`
	ServerUsPerOp *float64 `json:"server_cpu_us_per_op,omitempty"`
	BrokerUsPerOp *float64 `json:"broker_cpu_us_per_op,omitempty"`
	opName        string
	// The busiest epoll worker's share of the window spent outside
	// epoll_wait, and the ready connections per wakeup: a generator that
	// keeps up is mostly waiting, with few events per wakeup.
	ClientBusyPct   *float64 `json:"client_worker_busy_pct,omitempty"`
	ClientEventsPer *float64 `json:"client_events_per_wakeup,omitempty"`
}

// traffic is what echo and broadcast check in every frame they receive,
// and the dials that failed.
type traffic struct {
	Errors     int64            `json:"errors"`
	Mismatches int64            `json:"mismatches"`
	Protocol   int64            `json:"protocol_errors"`
	DialErrors int              `json:"dial_errors"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Unexpected int64            `json:"unexpected_messages"`
}

// take copies the workers' checks and the failed dials.
func (t *traffic) take(st *wstats, dialErrors int) {
	t.Errors, t.ErrorKinds = st.errors, st.errKinds
	t.Mismatches, t.Protocol, t.Unexpected = st.mismatches, st.protocol, st.unexpected
	t.DialErrors = dialErrors
}

func (t *traffic) rows() [][2]string {
	return [][2]string{
		{"errors", fmt.Sprintf("%d%s", t.Errors, fmtKinds(t.ErrorKinds))},
		{"mismatches", fmt.Sprint(t.Mismatches)},
		{"protocol errors", fmt.Sprint(t.Protocol)},
		{"dial errors", fmt.Sprint(t.DialErrors)},
	}
}

// engineLoad sets the workers' load figures.
func (c *common) engineLoad(st *wstats) {
	if st.wakeups == 0 {
		return
	}
	b := round2(st.maxBusy)
	e := round2(float64(st.events) / float64(st.wakeups))
	c.ClientBusyPct, c.ClientEventsPer = &b, &e
}

// perOp sets the CPU cost per operation from ops done in the window.
func (c *common) perOp(ops int64, name string) {
	if ops <= 0 {
		return
	}
	c.opName = name
	v := round2(c.clientStats.CPUSec * 1e6 / float64(ops))
	c.ClientUsPerOp = &v
	if s := c.serverStats; s != nil && s.SampleErr == "" {
		w := round2(s.CPUSec * 1e6 / float64(ops))
		c.ServerUsPerOp = &w
	}
	if b := c.Broker; b != nil && b.SampleErr == "" {
		w := round2(b.CPUSec * 1e6 / float64(ops))
		c.BrokerUsPerOp = &w
	}
}

func newCommon(cfg *config, fdLimit uint64) common {
	return common{
		Scenario:   cfg.scenario,
		Label:      cfg.label,
		URL:        cfg.url,
		Baseline:   cfg.baselineKind,
		Workers:    cfg.workers,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		FDLimit:    fdLimit,
		WarmupS:    cfg.warmup.Seconds(),
	}
}

func (c *common) rows() [][2]string {
	r := [][2]string{{"scenario", c.Scenario}}
	if c.Label != "" {
		r = append(r, [2]string{"label", c.Label})
	}
	r = append(r, [2]string{"url", c.URL})
	if c.Baseline != "" {
		r = append(r, [2]string{"server", "baseline (" + c.Baseline + ")"})
	}
	r = append(r,
		[2]string{"window", fmt.Sprintf("%.2fs (after %.2fs warmup)", c.WindowS, c.WarmupS)},
		[2]string{"client", fmt.Sprintf("%d workers, GOMAXPROCS %d, RLIMIT_NOFILE %d", c.Workers, c.GOMAXPROCS, c.FDLimit)},
		[2]string{"client CPU", fmt.Sprintf("%.2fs (%.0f%% of one core), %d heap allocations", c.clientStats.CPUSec, c.clientStats.CPUPct, c.Allocs)},
	)
	if c.ClientUsPerOp != nil {
		v := fmt.Sprintf("client %.2fµs", *c.ClientUsPerOp)
		if c.ServerUsPerOp != nil {
			v += fmt.Sprintf(", server %.2fµs", *c.ServerUsPerOp)
			if n := len(c.serverStats.Nodes); n > 1 {
				v += fmt.Sprintf(" (%d nodes together)", n)
			}
		}
		if c.BrokerUsPerOp != nil {
			v += fmt.Sprintf(", broker %.2fµs", *c.BrokerUsPerOp)
		}
		r = append(r, [2]string{"CPU per " + c.opName, v})
	}
	if c.ClientBusyPct != nil {
		r = append(r, [2]string{"client workers", fmt.Sprintf("busiest %.0f%% busy (not in epoll_wait), %.2f ready connections per wakeup", *c.ClientBusyPct, *c.ClientEventsPer)})
	}
	if s := c.serverStats; s != nil {
		if len(s.Nodes) > 1 {
			r = append(r,
				[2]string{"server CPU", fmt.Sprintf("%.2fs (%.0f%% of one core), %d nodes together", s.CPUSec, s.CPUPct, len(s.Nodes))},
				[2]string{"server RSS (max)", fmtBytes(s.MaxRSS) + " (sum of each node's maximum)"},
			)
			for i, n := range s.Nodes {
				v := fmt.Sprintf("CPU %.2fs (%.0f%% of one core), RSS max %s, pid %d", n.CPUSec, n.CPUPct, fmtBytes(n.MaxRSS), n.PID)
				if n.SampleErr != "" {
					v += ", error: " + n.SampleErr
				}
				r = append(r, [2]string{fmt.Sprintf("  node %d", i+1), v})
			}
		} else {
			r = append(r,
				[2]string{"server CPU", fmt.Sprintf("%.2fs (%.0f%% of one core), pid %d", s.CPUSec, s.CPUPct, s.PID)},
				[2]string{"server RSS (max)", fmtBytes(s.MaxRSS)},
			)
		}
		if s.SampleErr != "" {
			r = append(r, [2]string{"server sampling", "error: " + s.SampleErr})
		}
	}
	if b := c.Broker; b != nil {
		v := fmt.Sprintf("%.2fs (%.0f%% of one core), RSS max %s, pid %d", b.CPUSec, b.CPUPct, fmtBytes(b.MaxRSS), b.PID)
		if b.SampleErr != "" {
			v += ", error: " + b.SampleErr
		}
		r = append(r, [2]string{"broker CPU", v})
	}
	if m := c.machineStats; m != nil {
		r = append(r, [2]string{"machine CPU", fmt.Sprintf("%.0f%% busy of %d00%% (interrupts %.0f%%), %.0f%% stolen; other processes %.0f%%", m.BusyPct, m.CPUs, m.IRQPct, m.StealPct, m.OthersPct)})
	}
	return r
}

// latency is a histogram's summary in microseconds.
type latency struct {
	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

func newLatency(h *hist) latency {
	us := func(ns uint64) float64 { return math.Round(float64(ns)/10) / 100 }
	return latency{
		P50:  us(h.quantile(0.50)),
		P99:  us(h.quantile(0.99)),
		P999: us(h.quantile(0.999)),
		Max:  us(h.max),
		Mean: math.Round(h.mean()/10) / 100,
	}
}

func (l latency) String() string {
	return fmt.Sprintf("p50 %s  p99 %s  p99.9 %s  max %s  mean %s",
		fmtUs(l.P50), fmtUs(l.P99), fmtUs(l.P999), fmtUs(l.Max), fmtUs(l.Mean))
}

func fmtUs(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<30 || b <= -1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20 || b <= -1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10 || b <= -1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtKinds(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// report prints the table (unless jsonOnly) and the JSON line.
func report(w io.Writer, res result, jsonOnly bool) error {
	if !jsonOnly {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, r := range res.rows() {
			fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
