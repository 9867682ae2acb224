//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// clusterCompareCmd is the mode that measures a moonwire cluster against
// one node:
//
//	moonbench cluster-compare [-brokers redis,nats] [-nodes 3] [-subs 10000] ...
//
// In one run it builds moonwire, starts one node with the memory broker,
// then -nodes nodes per broker kind (fresh nodes, a prefix of their own),
// and runs the broadcast scenario against each setup: at -low-rate
// messages/s, then a short closed-loop probe and a few fixed rates to find
// the highest rate sustained (0 lost, p99 under -p99-max, the rate
// reached). It prints every step and a table with the cluster/single
// ratios.
const clusterCompareCmd = "cluster-compare"

const clusterUsage = `moonbench cluster-compare: broadcast on one moonwire node against a cluster

Usage:
  moonbench cluster-compare [-brokers redis,nats] [-nodes 3] [-subs 10000] [-duration 10s]

Builds moonwire (go build -o -moonwire ./cmd/moonwire, in the module
holding the working directory), then starts, one setup after the other,
one node with the memory broker and, for each kind in -brokers, -nodes
fresh nodes on 127.0.0.1 (ports -port and up, admin ports -port+10 and
up, pprof on) sharing that broker under a prefix unique to the run. A
kind the build does not register, or whose broker is down, is skipped.

Each setup runs the broadcast scenario (-subs subscribers round-robin
over the nodes, -pubs publishers on the first node, -size bytes):
  low      at -low-rate messages/s
  compare  at -compare-rate messages/s: the same work for every setup
  probe    closed loop (-rate 0) for -probe: the capacity
  search   at most -max-steps fixed rates from the probe's, for the highest
           rate sustained: 0 lost, no errors, p99 at most -p99-max, 95% of
           the rate published (when the low rate's p99 is already over
           -p99-max: the highest rate sustained, p99 not counted)
and reports deliveries/s, p50/p99, lost, the nodes' CPU per delivery
(summed over nodes) and the broker's, and the CPU other processes used
meanwhile (they disturb the figures), then the cluster/single ratios.
Every run's JSON line goes to OUT/results.jsonl; configs, logs and
profiles (-profile-rate) to OUT.

Flags:
`

type clusterOpts struct {
	brokers     []string
	nodes       int
	subs        int
	pubs        int
	size        int
	inflight    int
	duration    time.Duration
	probe       time.Duration
	warmup      time.Duration
	lowRate     float64
	compareRate float64
	p99Max      time.Duration
	maxSteps    int
	budget      time.Duration
	out         string
	moonwire    string
	build       bool
	redisURL    string
	natsURL     string
	port        int
	sources     int
	workers     int
	profileRate float64
	pause       time.Duration
}

func parseClusterFlags(args []string, stderr io.Writer) (*clusterOpts, error) {
	o := &clusterOpts{}
	fs := flag.NewFlagSet(clusterCompareCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "redis,nats", "comma-separated broker kinds to run the cluster with")
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster")
	fs.IntVar(&o.subs, "subs", 10000, "subscribers, spread round-robin over the nodes")
	fs.IntVar(&o.pubs, "pubs", 1, "publishers, all on the first node")
	fs.IntVar(&o.size, "size", 64, "payload bytes (min 16)")
	fs.IntVar(&o.inflight, "inflight", 32, "messages per publisher not yet delivered to every subscriber")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "window of each fixed-rate step")
	fs.DurationVar(&o.probe, "probe", 5*time.Second, "window of the closed-loop probe")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up of every step")
	fs.Float64Var(&o.lowRate, "low-rate", 10, "the low fixed rate every setup runs at, messages/s")
	fs.Float64Var(&o.compareRate, "compare-rate", 100, "a second fixed rate every setup runs at, messages/s (0: none)")
	fs.DurationVar(&o.p99Max, "p99-max", 100*time.Millisecond, "highest p99 delivery latency a sustained rate may have")
	fs.IntVar(&o.maxSteps, "max-steps", 3, "fixed-rate steps of the search for the highest rate, per setup")
	fs.DurationVar(&o.budget, "budget", 6*time.Minute, "no new step starts after this long (the steps under way finish)")
	fs.StringVar(&o.out, "out", "", "folder for configs, logs, results.jsonl and profiles (default: a new one under $TMPDIR)")
	fs.StringVar(&o.moonwire, "moonwire", "/tmp/moonwire", "moonwire binary: built there (see -build)")
	fs.BoolVar(&o.build, "build", true, "build -moonwire from ./cmd/moonwire first")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379", "[broker] url for kind redis")
	fs.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "[broker] url for kind nats")
	fs.IntVar(&o.port, "port", 18765, "first node's port; node i listens on port+i, its admin on port+10+i")
	fs.IntVar(&o.sources, "sources", 253, "source addresses (127.0.0.2..) the connections are spread over")
	fs.IntVar(&o.workers, "workers", runtime.NumCPU(), "moonbench's epoll workers")
	fs.Float64Var(&o.profileRate, "profile-rate", 0, "if > 0: one more step per setup at this rate, with a CPU profile of every node (OUT/profile-*.pb.gz)")
	fs.DurationVar(&o.pause, "pause", time.Second, "wait between steps (the nodes close the last step's connections)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), clusterUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.brokers, err = parseBrokers(*brokers); err != nil {
		return nil, err
	}
	switch {
	case o.nodes < 2 || o.nodes > 9:
		return nil, errors.New("-nodes must be between 2 and 9")
	case o.subs < o.nodes || o.pubs < 1:
		return nil, errors.New("-subs must be at least -nodes, -pubs at least 1")
	case o.size < minBroadcastSize:
		return nil, fmt.Errorf("-size must be at least %d", minBroadcastSize)
	case o.inflight < 1:
		return nil, errors.New("-inflight must be at least 1")
	case o.duration <= 0 || o.probe <= 0 || o.warmup < 0:
		return nil, errors.New("-duration and -probe must be positive, -warmup not negative")
	case o.lowRate <= 0 || o.compareRate < 0:
		return nil, errors.New("-low-rate must be positive, -compare-rate not negative")
	case o.maxSteps < 1 || o.maxSteps > 10:
		return nil, errors.New("-max-steps must be between 1 and 10")
	case o.port < 1024 || o.port+20 > 65535:
		return nil, errors.New("-port must be between 1024 and 65515")
	}
	return o, nil
}

// nodeConfig is the moonwire config of one node: the broadcast route of
// testdata/broadcast.toml (room.lua), the admin listener with pprof
// (none if adminPort is 0), and the broker.
func nodeConfig(scriptsDir string, port, adminPort int, kind, url, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by moonbench cluster-compare\n\n")
	fmt.Fprintf(&b, "[server]\nlisten = %q\n\n", "127.0.0.1:"+strconv.Itoa(port))
	fmt.Fprintf(&b, "[scripts]\ndir = %q\n\n", scriptsDir)
	if adminPort > 0 {
		fmt.Fprintf(&b, "[admin]\nlisten = %q\npprof = true\n\n", "127.0.0.1:"+strconv.Itoa(adminPort))
	}
	fmt.Fprintf(&b, "[broker]\nkind = %q\n", kind)
	if url != "" {
		fmt.Fprintf(&b, "url = %q\n", url)
	}
	fmt.Fprintf(&b, "prefix = %q\n\n", prefix)
	fmt.Fprintf(&b, "[[routes]]\npath = \"/room\"\nscript = \"room.lua\"\nsettings = { room = \"bench\" }\n")
	return b.String()
}

// mwNode is one running moonwire process.
type mwNode struct {
	cmd       *exec.Cmd
	done      chan struct{}
	port      int
	adminPort int
	log       string
}

func (n *mwNode) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// setup is one moonwire deployment: a single node or a cluster.
type setup struct {
	name   string // "single", "redis", "nats"
	kind   string // broker kind
	url    string // broker URL
	nodes  int
	prefix string
	broker int // broker process id, 0 if none or unknown

	run   []*mwNode
	steps []*clusterStep
	low   *clusterStep // at -low-rate
	mid   *clusterStep // at -compare-rate
	probe *clusterStep // closed loop
	max   *clusterStep // the highest rate sustained
	// maxAny is the highest rate sustained when p99 is not counted: what
	// the search finds when the low rate's p99 is already over -p99-max.
	maxAny *clusterStep
	skip   string // why the setup did not run
	notes  []string
}

func (s *setup) label() string {
	if s.nodes == 1 {
		return "1 node (" + s.kind + ")"
	}
	return fmt.Sprintf("%d nodes (%s)", s.nodes, s.kind)
}

// clusterStep is one broadcast run of a setup.
type clusterStep struct {
	what string // "low", "compare", "probe", "search", "profile"
	rate float64
	res  *broadcastResult
	pass bool   // sustained: 0 lost, no errors, rate reached, p99 <= -p99-max
	ok   bool   // the same but for p99
	why  string // what failed
}

// cpuPerDelivery is the nodes' CPU per delivery in µs, unrounded.
func (c *clusterStep) cpuPerDelivery() float64 {
	s := c.res.serverStats
	if s == nil || s.SampleErr != "" || c.res.Deliveries == 0 {
		return math.NaN()
	}
	return s.CPUSec * 1e6 / float64(c.res.Deliveries)
}

func (c *clusterStep) brokerPerDelivery() float64 {
	b := c.res.Broker
	if b == nil || b.SampleErr != "" || c.res.Deliveries == 0 {
		return math.NaN()
	}
	return b.CPUSec * 1e6 / float64(c.res.Deliveries)
}

// judge says whether a step sustained its rate; p99Max 0 does not count
// the latency.
func judge(r *broadcastResult, p99Max time.Duration) (bool, string) {
	var why []string
	if r.Deliveries == 0 {
		why = append(why, "no deliveries")
	}
	if r.Lost > 0 {
		why = append(why, fmt.Sprintf("%d lost", r.Lost))
	}
	if r.Errors > 0 || r.Protocol > 0 || r.Mismatches > 0 {
		why = append(why, fmt.Sprintf("%d errors%s", r.Errors+r.Protocol+r.Mismatches, fmtKinds(r.ErrorKinds)))
	}
	if r.Rate > 0 && r.PublishRate < 0.95*r.Rate {
		why = append(why, fmt.Sprintf("published %s/s of %s/s", fmtRate(r.PublishRate), fmtRate(r.Rate)))
	}
	if p99 := time.Duration(r.P99 * 1e3); p99Max > 0 && p99 > p99Max {
		why = append(why, "p99 "+fmtUs(r.P99))
	}
	return len(why) == 0, strings.Join(why, ", ")
}

// niceRate rounds a rate to two significant digits.
func niceRate(r float64) float64 {
	if r <= 0 {
		return 0
	}
	mag := math.Pow(10, math.Floor(math.Log10(r))-1)
	return math.Round(r/mag) * mag
}

// nextRate is the search's next rate from the highest rate that passed
// (lo, 0 if none) and the lowest that failed (hi, 0 if none), and the
// publish rate the last failure reached; 0 when the search is done.
func nextRate(lo, hi, reached, floor float64) float64 {
	switch {
	case hi == 0:
		return niceRate(lo * 1.25)
	case lo == 0:
		r := hi * 0.75
		if reached > 0 && reached*0.9 < r {
			r = reached * 0.9
		}
		if r = niceRate(r); r < floor || r >= hi {
			return 0
		}
		return r
	case hi/lo <= 1.15:
		return 0
	}
	// Between the two: just under what the failure reached, if that is
	// in between, else the geometric middle.
	r := niceRate(math.Sqrt(lo * hi))
	if g := niceRate(reached * 0.9); g > lo && g < hi {
		r = g
	}
	if r <= lo || r >= hi {
		return 0
	}
	return r
}

type clusterRun struct {
	o          *clusterOpts
	root       string
	scriptsDir string
	log        io.Writer
	results    *os.File
	deadline   time.Time
	runID      string
}

func clusterCompare(args []string, stdout, stderr io.Writer) int {
	return runMode("moonbench cluster-compare:", args, stderr, parseClusterFlags, func(ctx context.Context, o *clusterOpts) error {
		return runClusterCompare(ctx, o, stdout, stderr)
	})
}

func runClusterCompare(ctx context.Context, o *clusterOpts, stdout, stderr io.Writer) error {
	began := time.Now()
	cr := &clusterRun{o: o, log: stderr, deadline: began.Add(o.budget), runID: strconv.FormatInt(began.UnixNano(), 36)}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("run from inside the moonwire module (go env GOMOD: %v)", err)
	}
	cr.root = filepath.Dir(strings.TrimSpace(string(gomod)))
	cr.scriptsDir = filepath.Join(cr.root, "cmd", "moonbench", "testdata")
	if _, err := os.Stat(filepath.Join(cr.scriptsDir, "room.lua")); err != nil {
		return fmt.Errorf("no room.lua in %s: %w", cr.scriptsDir, err)
	}
	if o.out == "" {
		if o.out, err = os.MkdirTemp("", "moonbench-cluster-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if cr.results, err = os.Create(filepath.Join(o.out, "results.jsonl")); err != nil {
		return err
	}
	defer cr.results.Close()
	if _, err := checkFDs(o.subs+o.pubs, 64); err != nil {
		return err
	}
	if o.build {
		logf(stderr, "building %s", o.moonwire)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.moonwire, "./cmd/moonwire")
		cmd.Dir = cr.root
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building moonwire: %w", err)
		}
	}
	load0 := loadAvg()
	logf(stderr, "output in %s; load average %s", o.out, load0)

	single := &setup{name: "single", kind: "memory", nodes: 1}
	setups := []*setup{single}
	for _, b := range o.brokers {
		s := &setup{name: b, kind: b, nodes: o.nodes}
		s.url = o.redisURL
		comm := "redis-server"
		if b == "nats" {
			s.url, comm = o.natsURL, "nats-server"
		}
		port := ""
		if u, err := url.Parse(strings.Split(s.url, ",")[0]); err == nil {
			port = u.Port()
		}
		s.broker = findProcess(comm, port)
		setups = append(setups, s)
	}
	defer func() {
		for _, s := range setups {
			cr.stop(s)
		}
	}()
	for _, s := range setups {
		if ctx.Err() != nil {
			break
		}
		s.prefix = "moonbench-" + cr.runID + "-" + s.name
		if err := cr.start(ctx, s); err != nil {
			s.skip = err.Error()
			logf(stderr, "%s: skipped: %s", s.label(), s.skip)
			continue
		}
		cr.measureSetup(ctx, s)
		cr.stop(s)
	}
	load1 := loadAvg()
	printClusterTable(stdout, o, setups, load0, load1, time.Since(began))
	fmt.Fprintf(stdout, "results: %s\n", cr.results.Name())
	return ctx.Err()
}

// measureSetup runs the fixed-rate steps, the probe and the search
// against running nodes.
func (cr *clusterRun) measureSetup(ctx context.Context, s *setup) {
	o := cr.o
	s.low = cr.step(ctx, s, "low", o.lowRate, o.duration)
	if o.compareRate > 0 {
		s.mid = cr.step(ctx, s, "compare", o.compareRate, o.duration)
	}
	s.probe = cr.step(ctx, s, "probe", 0, o.probe)
	// The search looks for the highest rate sustained; when even the low
	// rate's p99 is over -p99-max, for the highest with p99 not counted.
	strict := s.low != nil && s.low.pass
	if !strict && s.low != nil {
		s.notes = append(s.notes, fmt.Sprintf("not even %s/s is sustained (%s): the search does not count p99", fmtRate(o.lowRate), s.low.why))
	}
	good := func(st *clusterStep) bool { return st != nil && (st.pass || !strict && st.ok) }
	best := func() *clusterStep {
		if strict {
			return s.max
		}
		return s.maxAny
	}
	keep := func(st *clusterStep) {
		if st.pass && (s.max == nil || st.rate > s.max.rate) {
			s.max = st
		}
		if st.ok && (s.maxAny == nil || st.rate > s.maxAny.rate) {
			s.maxAny = st
		}
	}
	for _, st := range []*clusterStep{s.low, s.mid} {
		if st != nil {
			keep(st)
		}
	}
	if s.probe != nil && ctx.Err() == nil {
		var lo, hi, reached float64
		if b := best(); b != nil {
			lo = b.rate
		}
		if s.mid != nil && !good(s.mid) {
			hi, reached = s.mid.rate, s.mid.res.PublishRate
		}
		r := niceRate(s.probe.res.PublishRate)
		if r <= lo || (hi > 0 && r >= hi) {
			r = nextRate(lo, hi, reached, o.lowRate)
		}
		for i := 0; i < o.maxSteps && r > 0 && ctx.Err() == nil; i++ {
			if time.Now().After(cr.deadline) {
				s.notes = append(s.notes, "search cut short: -budget spent")
				break
			}
			st := cr.step(ctx, s, "search", r, o.duration)
			if st == nil {
				break
			}
			keep(st)
			if good(st) {
				lo = r
			} else {
				hi, reached = r, st.res.PublishRate
			}
			r = nextRate(lo, hi, reached, o.lowRate)
		}
	}
	if o.profileRate > 0 && ctx.Err() == nil {
		cr.step(ctx, s, "profile", o.profileRate, o.duration)
	}
}

// step runs the broadcast scenario once against s's nodes; nil when it
// could not run (logged).
func (cr *clusterRun) step(ctx context.Context, s *setup, what string, rate float64, window time.Duration) *clusterStep {
	o := cr.o
	urls := make([]string, len(s.run))
	pids := make(pidList, len(s.run))
	for i, n := range s.run {
		urls[i] = fmt.Sprintf("ws://127.0.0.1:%d/room", n.port)
		pids[i] = n.cmd.Process.Pid
	}
	cfg := &config{
		scenario:    "broadcast",
		url:         strings.Join(urls, ","),
		urls:        urls,
		inflight:    o.inflight,
		size:        o.size,
		duration:    window,
		warmup:      o.warmup,
		subs:        o.subs,
		pubs:        o.pubs,
		rate:        rate,
		pids:        pids,
		brokerPID:   s.broker,
		jsonOnly:    true,
		label:       fmt.Sprintf("cluster/%s/%s/%g", s.name, what, rate),
		workers:     o.workers,
		sources:     o.sources,
		drain:       3 * time.Second,
		dialConc:    64,
		dialTimeout: 10 * time.Second,
		closeWait:   3 * time.Second,
	}
	if err := cfg.validate(); err != nil {
		logf(cr.log, "%s %s: %v", s.label(), what, err)
		return nil
	}
	var wg sync.WaitGroup
	if what == "profile" {
		cfg.onWindow = func() {
			for i, n := range s.run {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f := filepath.Join(o.out, fmt.Sprintf("profile-%s-node%d.pb.gz", s.name, i+1))
					if err := fetchProfile(n.adminPort, window, f); err != nil {
						logf(cr.log, "profile of node %d: %v", i+1, err)
					}
				}()
			}
		}
	}
	r, err := runBroadcast(ctx, cfg, cr.log)
	wg.Wait()
	if err != nil {
		logf(cr.log, "%s %s at %g/s: %v", s.label(), what, rate, err)
		return nil
	}
	res := r.(*broadcastResult)
	_ = report(cr.results, res, true)
	st := &clusterStep{what: what, rate: rate, res: res}
	st.pass, st.why = judge(res, o.p99Max)
	st.ok, _ = judge(res, 0)
	verdict := "sustained"
	if !st.pass {
		verdict = "not sustained: " + st.why
	}
	target := "closed loop"
	if rate > 0 {
		target = fmtRate(rate) + "/s"
	}
	logf(cr.log, "%s %s %s: published %s/s, %s deliveries/s, p99 %s, lost %d, nodes %.3fµs/delivery (%.0f%% CPU, %s deliveries/write), client %.0f%% CPU, others %s CPU, %s; load %s",
		s.label(), what, target, fmtRate(res.PublishRate), fmtRate(res.DeliveriesPerS), fmtUs(res.P99), res.Lost,
		st.cpuPerDelivery(), serverPct(res), perWrite(res), res.clientStats.CPUPct, othersPct(res), verdict, loadAvg())
	s.steps = append(s.steps, st)
	_ = sleepUntil(ctx, nowNs()+int64(o.pause))
	return st
}

// perWrite is the deliveries per server write system call.
func perWrite(r *broadcastResult) string {
	if r.DeliveriesPerWrite == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *r.DeliveriesPerWrite)
}

// othersPct is the CPU other processes used in the window.
func othersPct(r *broadcastResult) string {
	if r.machineStats == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", r.OthersPct)
}

func serverPct(r *broadcastResult) float64 {
	if r.serverStats == nil {
		return math.NaN()
	}
	return r.serverStats.CPUPct
}

// start writes the configs of s's nodes, checks one with "moonwire
// check" (which also says whether the build registers the broker), and
// starts the nodes.
func (cr *clusterRun) start(ctx context.Context, s *setup) error {
	o := cr.o
	s.run = nil
	brokerURL := ""
	if s.kind != "memory" {
		brokerURL = s.url
	}
	var files []string
	for i := 0; i < s.nodes; i++ {
		port, admin := o.port+i, o.port+10+i
		if portBusy(port) || portBusy(admin) {
			return fmt.Errorf("127.0.0.1:%d or :%d is already in use (-port)", port, admin)
		}
		f := filepath.Join(o.out, fmt.Sprintf("%s-node%d.toml", s.name, i+1))
		if err := os.WriteFile(f, []byte(nodeConfig(cr.scriptsDir, port, admin, s.kind, brokerURL, s.prefix)), 0o644); err != nil {
			return err
		}
		files = append(files, f)
	}
	if out, err := exec.CommandContext(ctx, o.moonwire, "check", "-config", files[0]).CombinedOutput(); err != nil {
		return fmt.Errorf("moonwire check: %s", strings.TrimSpace(string(out)))
	}
	for i, f := range files {
		logPath := filepath.Join(o.out, fmt.Sprintf("%s-node%d.log", s.name, i+1))
		lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			cr.stop(s)
			return err
		}
		cmd := exec.Command(o.moonwire, "-config", f, "-log-level", "warn")
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			lf.Close()
			cr.stop(s)
			return err
		}
		lf.Close()
		n := &mwNode{cmd: cmd, done: make(chan struct{}), port: o.port + i, adminPort: o.port + 10 + i, log: logPath}
		go func() { _ = cmd.Wait(); close(n.done) }()
		s.run = append(s.run, n)
		if err := waitListening(ctx, n); err != nil {
			cr.stop(s)
			return err
		}
	}
	pids := make([]string, len(s.run))
	for i, n := range s.run {
		pids[i] = strconv.Itoa(n.cmd.Process.Pid)
	}
	logf(cr.log, "%s: started, pids %s, prefix %s, broker pid %d", s.label(), strings.Join(pids, ","), s.prefix, s.broker)
	return nil
}

func (cr *clusterRun) stop(s *setup) {
	for _, n := range s.run {
		n.stop()
	}
	s.run = nil
}

// waitListening waits (10s at most) for the node's port and admin port.
func waitListening(ctx context.Context, n *mwNode) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-n.done:
			tail, _ := os.ReadFile(n.log)
			return fmt.Errorf("moonwire on :%d exited: %s", n.port, strings.TrimSpace(string(tail)))
		default:
		}
		if portBusy(n.port) && portBusy(n.adminPort) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("moonwire on :%d did not listen within 10s (log: %s)", n.port, n.log)
}

// portBusy says whether something accepts on 127.0.0.1:port.
func portBusy(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// fetchProfile saves a CPU profile of d from a node's admin pprof.
func fetchProfile(adminPort int, d time.Duration, file string) error {
	secs := max(1, int(d.Seconds()))
	cl := &http.Client{Timeout: d + 15*time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// findProcess is the pid of the process named comm: the only one, or
// the only one whose command line holds port; 0 if none or several.
func findProcess(comm, port string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var all, withPort []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		all = append(all, pid)
		if cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && port != "" && strings.Contains(string(cl), port) {
			withPort = append(withPort, pid)
		}
	}
	switch {
	case len(all) == 1:
		return all[0]
	case len(withPort) == 1:
		return withPort[0]
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// machine describes the CPUs the figures ran on: their count and, where
// /proc/cpuinfo names it, their model. Ratios compare within one machine
// only; the model tells a reader which results were taken on which.
func machine() string {
	n := fmt.Sprintf("%d CPUs", runtime.NumCPU())
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return n
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return n + " (" + strings.TrimSpace(v) + ")"
		}
	}
	return n
}

// ratio is a/b formatted, "-" when either is missing.
func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func fmtMaybe(v float64, format string) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func printClusterTable(w io.Writer, o *clusterOpts, setups []*setup, load0, load1 string, took time.Duration) {
	fmt.Fprintf(w, "\nbroadcast: %d subscribers round-robin over the nodes, %d publisher(s) on the first, %d-byte messages; steps of %s (probe %s) after %s warm-up\n",
		o.subs, o.pubs, o.size, o.duration, o.probe, o.warmup)
	fmt.Fprintf(w, "machine: %s, load average %s at the start, %s at the end; took %s\n\n", machine(), load0, load1, took.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\tstep\trate/s\tpublished/s\tdeliveries/s\tp50\tp99\tlost\tnodes CPU µs/delivery\tdeliveries/write\tbroker CPU µs/delivery\tothers' CPU\tsustained\t")
	for _, s := range setups {
		if s.skip != "" {
			fmt.Fprintf(tw, "%s\tskipped\t\t\t\t\t\t\t\t\t\t\t\t\n", s.label())
			continue
		}
		for _, st := range s.steps {
			rate := "closed"
			if st.rate > 0 {
				rate = fmtRate(st.rate)
			}
			sus := "yes"
			switch {
			case !st.ok:
				sus = "no"
			case !st.pass:
				sus = "no (p99)"
			}
			if st.what == "probe" || st.what == "profile" {
				sus = "(" + st.what + ")"
			}
			r := st.res
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.label(), st.what, rate, fmtRate(r.PublishRate),
				fmtRate(r.DeliveriesPerS), fmtUs(r.P50), fmtUs(r.P99), r.Lost,
				fmtMaybe(st.cpuPerDelivery(), "%.3f"), perWrite(r), fmtMaybe(st.brokerPerDelivery(), "%.3f"), othersPct(r), sus)
		}
	}
	_ = tw.Flush()

	// Each setup against the single node: the same rate (same work), and
	// the capacities.
	single := setups[0]
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\tat\tdeliveries/s\tp99\tlost\tnodes CPU µs/delivery\tCPU/delivery vs 1 node\tp99 vs 1 node\tdeliveries/s vs 1 node\t")
	row := func(s *setup, at string, st, base *clusterStep) {
		if st == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t\n", s.label(), at)
			return
		}
		cpuR, p99R, delR := "", "", ""
		if base != nil && s != single {
			cpuR = ratio(st.cpuPerDelivery(), base.cpuPerDelivery())
			p99R = ratio(st.res.P99, base.res.P99)
			delR = ratio(st.res.DeliveriesPerS, base.res.DeliveriesPerS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", s.label(), at, fmtRate(st.res.DeliveriesPerS), fmtUs(st.res.P99), st.res.Lost,
			fmtMaybe(st.cpuPerDelivery(), "%.3f"), cpuR, p99R, delR)
	}
	for _, s := range setups {
		if s.skip != "" {
			continue
		}
		row(s, fmtRate(o.lowRate)+"/s", s.low, single.low)
		if o.compareRate > 0 {
			row(s, fmtRate(o.compareRate)+"/s", s.mid, single.mid)
		}
		row(s, "closed loop", s.probe, single.probe)
		at := "max sustained: none"
		if s.max != nil {
			at = "max sustained " + fmtRate(s.max.rate) + "/s"
		}
		row(s, at, s.max, single.max)
		if s.maxAny != nil && s.maxAny != s.max {
			row(s, "max, p99 not counted "+fmtRate(s.maxAny.rate)+"/s", s.maxAny, single.maxAny)
		}
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	for _, s := range setups {
		if s.skip != "" {
			fmt.Fprintf(w, "%s: skipped: %s\n", s.label(), s.skip)
		}
		for _, n := range s.notes {
			fmt.Fprintf(w, "%s: %s\n", s.label(), n)
		}
	}
	// The targets.
	cmp := func(st, base *clusterStep) (string, bool) {
		if st == nil || base == nil {
			return "-", false
		}
		a, b := st.cpuPerDelivery(), base.cpuPerDelivery()
		return ratio(a, b), !math.IsNaN(a) && !math.IsNaN(b) && b > 0 && a/b <= 1.5
	}
	for _, s := range setups {
		if s.skip != "" {
			continue
		}
		fmt.Fprintf(w, "targets, %s:\n", s.label())
		if s != single {
			r, ok := cmp(s.low, single.low)
			fmt.Fprintf(w, "  CPU per delivery <= 1.5x one node's at %s/s: %s (%s)\n", fmtRate(o.lowRate), met(ok), r)
			if o.compareRate > 0 {
				r, ok := cmp(s.mid, single.mid)
				fmt.Fprintf(w, "  CPU per delivery <= 1.5x one node's at %s/s: %s (%s)\n", fmtRate(o.compareRate), met(ok), r)
			}
		}
		if s.low != nil {
			fmt.Fprintf(w, "  p99 < %s at %s/s: %s (%s)\n", fmtUs(float64(o.p99Max.Microseconds())), fmtRate(o.lowRate),
				met(time.Duration(s.low.res.P99*1e3) < o.p99Max), fmtUs(s.low.res.P99))
		}
		var lost int64
		for _, st := range s.steps {
			lost += st.res.Lost
		}
		fmt.Fprintf(w, "  0 lost (broker up), every step: %s (%d lost)\n", met(lost == 0), lost)
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// parseBrokers reads -brokers: a comma-separated list of redis and nats.
func parseBrokers(list string) ([]string, error) {
	var out []string
	for _, b := range splitList(list) {
		if b == "" {
			continue
		}
		if b != "redis" && b != "nats" {
			return nil, fmt.Errorf("-brokers: unknown kind %q (redis, nats)", b)
		}
		out = append(out, b)
	}
	return out, nil
}
