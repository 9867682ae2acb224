//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gobwas/ws"
)

// stormCmd is the mode that measures recovery after a node dies:
//
//	moonbench reconnect-storm [-brokers redis,nats] [-clients 5000] [-rate 20] ...
//
// Per broker kind it starts 3 fresh chat nodes (scripts/chat.lua, the
// examples/cluster config with a prefix of its own), -clients followers
// in one room spread over them, one publisher on the first node, then
// SIGKILLs the last node and measures how long its followers take to be
// on another node with no gap; at the end every follower must hold a
// contiguous run of offsets up to the publisher's last one.
const stormCmd = "reconnect-storm"

const stormUsage = `moonbench reconnect-storm: SIGKILL one node of three under followers, measure their recovery

Usage:
  moonbench reconnect-storm [-brokers redis,nats] [-clients 5000] [-rate 20] [-history 1000]

Builds moonwire (see -build), then for each kind in -brokers starts 3
fresh nodes on 127.0.0.1 (ports -port.., admin -port+10..) with the
examples/cluster config: scripts/chat.lua on /chat/{room}, the broker and
store of that kind under a prefix unique to the run, [history] "*" =
{ size = -history }, presence_ttl -presence-ttl.

One publisher on node 1 sends -rate messages/s to /chat/storm for the
whole run; -clients followers join the room round-robin over the nodes
and keep a contiguous run of offsets as examples/cluster's follower does
(on a drop, a 1013 close or a gap: reconnect to another node with
?since=LAST&epoch=EPOCH). Once every follower has joined and caught up
with the publisher, node 3 is killed (SIGKILL). Its followers' recovery
time is from the kill until the follower is connected to another node
with a contiguous run up to the offset the publisher had heard at the
kill. After -after more seconds the publisher stops, and every follower
must reach its final offset: lost (missing offsets, reloads' skips
included), duplicates and reloads are counted (targets: 0).

Flags:
`

type stormOpts struct {
	brokers     []string
	clients     int
	rate        float64
	history     int
	presenceTTL time.Duration
	warmupMax   time.Duration
	settle      time.Duration
	recoverMax  time.Duration
	after       time.Duration
	finalMax    time.Duration
	dialConc    int
	dialTimeout time.Duration
	sources     int
	port        int
	out         string
	moonwire    string
	build       bool
	redisURL    string
	natsURL     string
	room        string
}

func parseStormFlags(args []string, stderr io.Writer) (*stormOpts, error) {
	o := &stormOpts{}
	fs := flag.NewFlagSet(stormCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "redis,nats", "comma-separated broker kinds")
	fs.IntVar(&o.clients, "clients", 5000, "followers in the room, round-robin over the 3 nodes")
	fs.Float64Var(&o.rate, "rate", 20, "publisher's messages/s")
	fs.IntVar(&o.history, "history", 1000, "[history] size of the room")
	fs.DurationVar(&o.presenceTTL, "presence-ttl", 2*time.Second, "[broker] presence_ttl")
	fs.DurationVar(&o.warmupMax, "warmup-max", 90*time.Second, "longest wait for every follower to join and catch up")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "steady traffic between the warm-up and the kill")
	fs.DurationVar(&o.recoverMax, "recover-max", 45*time.Second, "longest wait for the killed node's followers to recover")
	fs.DurationVar(&o.after, "after", 5*time.Second, "traffic after the recovery, before the publisher stops")
	fs.DurationVar(&o.finalMax, "final-max", 20*time.Second, "longest wait for every follower to reach the final offset")
	fs.IntVar(&o.dialConc, "dial-concurrency", 64, "followers dialing at once during the warm-up")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "timeout of one dial + upgrade")
	fs.IntVar(&o.sources, "sources", 253, "source addresses (127.0.0.2..) the followers are spread over; 0: the kernel's")
	fs.IntVar(&o.port, "port", 18865, "first node's port; node i listens on port+i, its admin on port+10+i")
	fs.StringVar(&o.out, "out", "", "folder for configs and logs (default: a new one under $TMPDIR)")
	fs.StringVar(&o.moonwire, "moonwire", "/tmp/moonwire", "moonwire binary: built there (see -build)")
	fs.BoolVar(&o.build, "build", true, "build -moonwire from ./cmd/moonwire first")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "[broker] url for kind redis")
	fs.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "[broker] url for kind nats")
	fs.StringVar(&o.room, "room", "storm", "the room: /chat/ROOM")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), stormUsage)
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
	case o.clients < 3:
		return nil, errors.New("-clients must be at least 3")
	case o.rate <= 0 || o.rate > 10000:
		return nil, errors.New("-rate must be in (0, 10000]")
	case o.history < 1:
		return nil, errors.New("-history must be at least 1")
	case o.warmupMax <= 0 || o.recoverMax <= 0 || o.finalMax <= 0 || o.after < 0 || o.settle < 0:
		return nil, errors.New("durations must be positive")
	case o.dialConc < 1:
		return nil, errors.New("-dial-concurrency must be at least 1")
	case o.port < 1024 || o.port+20 > 65535:
		return nil, errors.New("-port must be between 1024 and 65515")
	case o.room == "" || strings.ContainsAny(o.room, "/?&# "):
		return nil, errors.New("-room must be a plain name")
	}
	return o, nil
}

// stormConfig is a node's config: examples/cluster's, with its own
// listeners, prefix, history size and presence TTL.
func stormConfig(scriptsDir string, port, adminPort int, kind, url, prefix string, history int, ttl time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by moonbench reconnect-storm\n\n")
	fmt.Fprintf(&b, "[server]\nlisten = %q\n\n", "127.0.0.1:"+strconv.Itoa(port))
	fmt.Fprintf(&b, "[scripts]\ndir = %q\n\n", scriptsDir)
	fmt.Fprintf(&b, "[admin]\nlisten = %q\n\n", "127.0.0.1:"+strconv.Itoa(adminPort))
	fmt.Fprintf(&b, "[broker]\nkind = %q\nurl = %q\nprefix = %q\npresence_ttl = %q\n\n", kind, url, prefix, ttl.String())
	fmt.Fprintf(&b, "[store]\nkind = %q\n\n", kind)
	fmt.Fprintf(&b, "[history]\n\"*\" = { size = %d, ttl = \"10m\" }\n\n", history)
	fmt.Fprintf(&b, "[[routes]]\npath = \"/chat/{room}\"\nscript = \"chat.lua\"\nsettings = { history = 20 }\n")
	return b.String()
}

// chatFields are the fields of a chat.lua message that a follower needs.
type chatFields struct {
	typ    []byte
	epoch  []byte
	text   []byte
	reason []byte
	offset uint64
	hasOff bool
}

// parseChat picks "type", "epoch", "text" and "offset" out of a chat.lua
// JSON object without decoding it: json.encode writes flat objects with
// sorted keys, strings without escapes for what moonbench sends. A
// string value with escapes is returned raw (still escaped).
func parseChat(p []byte) (f chatFields, ok bool) {
	if len(p) < 2 || p[0] != '{' {
		return f, false
	}
	i := 1
	for i < len(p) {
		for i < len(p) && (p[i] == ' ' || p[i] == ',') {
			i++
		}
		if i >= len(p) || p[i] == '}' {
			return f, true
		}
		if p[i] != '"' {
			return f, false
		}
		end := bytes.IndexByte(p[i+1:], '"')
		if end < 0 {
			return f, false
		}
		key := p[i+1 : i+1+end]
		i += end + 2
		for i < len(p) && p[i] == ' ' {
			i++
		}
		if i >= len(p) || p[i] != ':' {
			return f, false
		}
		i++
		for i < len(p) && p[i] == ' ' {
			i++
		}
		if i >= len(p) {
			return f, false
		}
		var val []byte
		if p[i] == '"' {
			j := i + 1
			for j < len(p) && p[j] != '"' {
				if p[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(p) {
				return f, false
			}
			val = p[i+1 : j]
			i = j + 1
		} else {
			j := i
			for j < len(p) && p[j] != ',' && p[j] != '}' {
				if p[j] == '{' || p[j] == '[' {
					return f, false // nested: not chat.lua's
				}
				j++
			}
			val = bytes.TrimSpace(p[i:j])
			i = j
		}
		switch string(key) {
		case "type":
			f.typ = val
		case "epoch":
			f.epoch = val
		case "text":
			f.text = val
		case "reason":
			f.reason = val
		case "offset":
			n, err := strconv.ParseUint(string(val), 10, 64)
			if err != nil {
				// json.encode may write an integral float as 1e+15 etc.
				fl, ferr := strconv.ParseFloat(string(val), 64)
				if ferr != nil || fl < 0 {
					return f, false
				}
				n = uint64(fl)
			}
			f.offset, f.hasOff = n, true
		}
	}
	return f, false
}

// verdict is what a follower does with a stamped message.
type verdict uint8

const (
	vAccept    verdict = iota // the next offset: taken
	vDup                      // an offset already held: counted, dropped
	vGap                      // offsets missing: reconnect with since
	vEpoch                    // the epoch changed: counted, taken as a reload
	vReload                   // the server said reload: taken from its offset
	vUnstamped                // no offset: ignored
)

// followState is a follower's bookkeeping: the contiguous run of offsets
// it holds, as examples/cluster's follower keeps it.
type followState struct {
	first, last uint64 // the run: first..last (last 0: nothing yet)
	epoch       string
	count       int64 // messages taken
	dups        int64
	gaps        int64 // gaps seen (each followed by a reconnect)
	reloads     int64
	skipped     int64 // offsets given up by reloads and epoch changes
	epochs      int64 // epoch changes
	firstDup    string
	reasons     map[string]int64 // reloads by reason
	conns       int64            // connections so far (set by the caller)
	connCount   int64            // messages taken on the current connection
}

// observe applies one message to the run.
func (s *followState) observe(f chatFields) verdict {
	if string(f.typ) == "reload" {
		s.reloads++
		if s.reasons == nil {
			s.reasons = map[string]int64{}
		}
		s.reasons[string(f.reason)]++
		if f.hasOff && s.last > 0 && f.offset > s.last {
			s.skipped += int64(f.offset - s.last)
		}
		if f.hasOff {
			s.last = f.offset
			if s.first == 0 {
				s.first = f.offset
			}
		}
		s.epoch = string(f.epoch)
		return vReload
	}
	if !f.hasOff {
		return vUnstamped
	}
	switch {
	case s.last > 0 && s.epoch != "" && string(f.epoch) != s.epoch:
		s.epochs++
		s.epoch = string(f.epoch)
		s.last = f.offset
		s.count++
		return vEpoch
	case s.last == 0 || f.offset == s.last+1:
		if s.last == 0 {
			s.first = f.offset
		}
		s.last, s.epoch = f.offset, string(f.epoch)
		s.count++
		s.connCount++
		return vAccept
	case f.offset <= s.last:
		if s.dups == 0 {
			s.firstDup = fmt.Sprintf("offset %d (%s) after %d, connection %d, its message %d", f.offset, f.typ, s.last, s.conns, s.connCount+1)
		}
		s.dups++
		return vDup
	}
	s.gaps++
	return vGap
}

// stormClient is one follower.
type stormClient struct {
	idx  int
	st   followState
	mu   sync.Mutex // guards st for the coordinator's reads
	node atomic.Int32
	up   atomic.Bool // connected (handshake done)
	// last mirrors st.last for lock-free reads.
	last atomic.Uint64

	// the kill
	victim    atomic.Bool
	recovered atomic.Int64 // ns after the kill; 0: not yet
	reloaded  atomic.Int64 // ns after the kill it was told to reload (not recovered); 0: not
	atKill    followState  // st at the kill
	reconnAt  atomic.Int64 // ns after the kill it got another node; 0: not yet

	dials, dialErrs, closes1013, drops atomic.Int64
	errKind                            atomic.Value // string: the last dial error
}

// storm is one broker's run.
type storm struct {
	o       *stormOpts
	urls    []string // ws://127.0.0.1:PORT/chat/ROOM per node
	d       *dialer
	clients []*stormClient
	dead    atomic.Int32 // index+1 of the killed node; 0: none
	killNs  atomic.Int64 // nowNs() at the kill
	target  atomic.Uint64

	pubLast atomic.Uint64 // the offset of the publisher's last message it heard
	pubSent atomic.Int64
	pubErr  atomic.Value
}

type stormResult struct {
	kind       string
	clients    int
	joined     int
	victims    int
	killOffset uint64
	final      uint64
	reconnect  []time.Duration // per victim: kill to connected elsewhere
	recovery   []time.Duration // per victim: kill to run >= killOffset, elsewhere
	unrecov    int
	reloadedV  int // victims told to reload instead of recovering
	// after the kill, per group: [0] the killed node's followers, [1] the others
	postReloads, postGaps, postDups, postLost [2]int64
	preReloads, preGaps, preDups, preLost     int64
	lost                                      int64
	behind                                    int // followers short of the final offset
	dups                                      int64
	reloads                                   int64
	gaps                                      int64
	epochs                                    int64
	c1013                                     int64
	dialErrs                                  int64
	published                                 int64
	load0                                     string
	load1                                     string
	took                                      time.Duration
	err                                       string
	notes                                     []string
}

func reconnectStorm(args []string, stdout, stderr io.Writer) int {
	return runMode("moonbench reconnect-storm:", args, stderr, parseStormFlags, func(ctx context.Context, o *stormOpts) error {
		return runStorm(ctx, o, stdout, stderr)
	})
}

func runStorm(ctx context.Context, o *stormOpts, stdout, stderr io.Writer) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("run from inside the moonwire module (go env GOMOD: %v)", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	scripts := filepath.Join(root, "scripts")
	if _, err := os.Stat(filepath.Join(scripts, "chat.lua")); err != nil {
		return fmt.Errorf("no chat.lua in %s: %w", scripts, err)
	}
	if o.out == "" {
		if o.out, err = os.MkdirTemp("", "moonbench-storm-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if _, err := checkFDs(o.clients+8, o.dialConc); err != nil {
		return err
	}
	if o.build {
		logf(stderr, "building %s", o.moonwire)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.moonwire, "./cmd/moonwire")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building moonwire: %w", err)
		}
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	var results []*stormResult
	for _, kind := range o.brokers {
		if ctx.Err() != nil {
			break
		}
		r := runStormKind(ctx, o, scripts, kind, "moonbench-storm-"+runID+"-"+kind, stderr)
		results = append(results, r)
		runtime.GC()
	}
	printStorm(stdout, o, results)
	return ctx.Err()
}

func runStormKind(ctx context.Context, o *stormOpts, scripts, kind, prefix string, log io.Writer) *stormResult {
	began := time.Now()
	res := &stormResult{kind: kind, clients: o.clients, load0: loadAvg()}
	defer func() { res.took = time.Since(began); res.load1 = loadAvg() }()
	url := o.redisURL
	if kind == "nats" {
		url = o.natsURL
	}
	var nodes []*mwNode
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	var files []string
	for i := 0; i < 3; i++ {
		port, admin := o.port+i, o.port+10+i
		if portBusy(port) || portBusy(admin) {
			res.err = fmt.Sprintf("127.0.0.1:%d or :%d is already in use (-port)", port, admin)
			return res
		}
		f := filepath.Join(o.out, fmt.Sprintf("%s-node%d.toml", kind, i+1))
		if err := os.WriteFile(f, []byte(stormConfig(scripts, port, admin, kind, url, prefix, o.history, o.presenceTTL)), 0o644); err != nil {
			res.err = err.Error()
			return res
		}
		files = append(files, f)
	}
	if out, err := exec.CommandContext(ctx, o.moonwire, "check", "-config", files[0]).CombinedOutput(); err != nil {
		res.err = "moonwire check: " + strings.TrimSpace(string(out))
		return res
	}
	for i, f := range files {
		logPath := filepath.Join(o.out, fmt.Sprintf("%s-node%d.log", kind, i+1))
		lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			res.err = err.Error()
			return res
		}
		cmd := exec.Command(o.moonwire, "-config", f, "-log-level", "warn")
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			lf.Close()
			res.err = err.Error()
			return res
		}
		lf.Close()
		n := &mwNode{cmd: cmd, done: make(chan struct{}), port: o.port + i, adminPort: o.port + 10 + i, log: logPath}
		go func() { _ = cmd.Wait(); close(n.done) }()
		nodes = append(nodes, n)
		if err := waitListening(ctx, n); err != nil {
			res.err = err.Error()
			return res
		}
	}
	logf(log, "%s: 3 nodes up (pids %d,%d,%d), prefix %s, history %d; load %s", kind,
		nodes[0].cmd.Process.Pid, nodes[1].cmd.Process.Pid, nodes[2].cmd.Process.Pid, prefix, o.history, loadAvg())

	s := &storm{o: o}
	for _, n := range nodes {
		s.urls = append(s.urls, fmt.Sprintf("ws://127.0.0.1:%d/chat/%s", n.port, o.room))
	}
	srcs, err := sourceAddrs(o.sources, s.urls[0])
	if err != nil {
		res.err = err.Error()
		return res
	}
	s.d = &dialer{urls: s.urls, timeout: o.dialTimeout, sources: srcs}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// The publisher, on node 1, for the whole run.
	pubDone := make(chan struct{})
	pubStop := make(chan struct{})
	var pubFinal atomic.Uint64
	go func() {
		defer close(pubDone)
		s.publish(cctx, pubStop, &pubFinal)
	}()

	// The followers, round-robin, -dial-concurrency at a time.
	s.clients = make([]*stormClient, o.clients)
	sem := make(chan struct{}, o.dialConc)
	for i := range s.clients {
		c := &stormClient{idx: i}
		c.node.Store(int32(i % 3))
		s.clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.follow(cctx, c, sem)
		}()
	}

	// Warm-up: every follower has joined and caught up with the publisher.
	deadline := time.Now().Add(o.warmupMax)
	for {
		if ctx.Err() != nil {
			res.err = "interrupted"
			return res
		}
		joined, behind := 0, 0
		pl := s.pubLast.Load()
		for _, c := range s.clients {
			if c.last.Load() > 0 && c.up.Load() {
				joined++
			}
			if c.last.Load() < pl {
				behind++
			}
		}
		res.joined = joined
		if joined == o.clients && behind == 0 && pl > 0 {
			break
		}
		if time.Now().After(deadline) {
			res.err = fmt.Sprintf("warm-up: after %s, %d of %d followers joined, %d behind the publisher's offset %d%s",
				o.warmupMax, joined, o.clients, behind, pl, s.dialErrSummary())
			logf(log, "%s: %s", kind, res.err)
			return res
		}
		time.Sleep(200 * time.Millisecond)
	}
	logf(log, "%s: %d followers joined and caught up (offset %d) in %s; load %s", kind, o.clients, s.pubLast.Load(),
		time.Since(began).Round(100*time.Millisecond), loadAvg())
	_ = sleepUntil(ctx, nowNs()+int64(o.settle))

	// The kill.
	victims := 0
	for _, c := range s.clients {
		if c.node.Load() == 2 {
			c.victim.Store(true)
			victims++
		}
		c.mu.Lock()
		c.atKill = c.st
		c.mu.Unlock()
	}
	k := s.pubLast.Load()
	res.killOffset, res.victims = k, victims
	s.target.Store(k)
	s.killNs.Store(nowNs())
	s.dead.Store(3)
	_ = nodes[2].cmd.Process.Kill()
	logf(log, "%s: SIGKILL node 3 (%d followers) at offset %d", kind, victims, k)

	deadline = time.Now().Add(o.recoverMax)
	for {
		left := 0
		for _, c := range s.clients {
			if c.victim.Load() && c.recovered.Load() == 0 && c.reloaded.Load() == 0 {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.notes = append(res.notes, fmt.Sprintf("%d of %d followers of the killed node not recovered within %s", left, victims, o.recoverMax))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range s.clients {
		if !c.victim.Load() {
			continue
		}
		if r := c.recovered.Load(); r > 0 {
			res.recovery = append(res.recovery, time.Duration(r))
		} else if c.reloaded.Load() > 0 {
			res.reloadedV++
		} else {
			res.unrecov++
		}
		if r := c.reconnAt.Load(); r > 0 {
			res.reconnect = append(res.reconnect, time.Duration(r))
		}
	}
	slices.Sort(res.recovery)
	slices.Sort(res.reconnect)
	if n := len(res.recovery); n > 0 {
		logf(log, "%s: recovered %d of %d: p50 %s, p99 %s, max %s; load %s", kind, n, victims,
			pct(res.recovery, 0.5), pct(res.recovery, 0.99), res.recovery[n-1], loadAvg())
	}

	// More traffic, then the publisher stops; its last message's offset
	// is the final one every follower must reach.
	_ = sleepUntil(ctx, nowNs()+int64(o.after))
	close(pubStop)
	select {
	case <-pubDone:
	case <-time.After(o.finalMax):
	}
	res.final = pubFinal.Load()
	res.published = s.pubSent.Load()
	if e, ok := s.pubErr.Load().(string); ok && e != "" {
		res.notes = append(res.notes, "publisher: "+e)
	}
	if res.final == 0 {
		res.final = s.pubLast.Load()
		res.err = fmt.Sprintf("the publisher never heard its last message: counted up to the last it heard, offset %d", res.final)
		if res.final == 0 {
			return res
		}
	}
	deadline = time.Now().Add(o.finalMax)
	for {
		behind := 0
		for _, c := range s.clients {
			if c.last.Load() < res.final {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	dupClients, dupVictims := 0, 0
	reasons := map[string]int64{}
	for _, c := range s.clients {
		c.mu.Lock()
		st := c.st
		c.mu.Unlock()
		if st.dups > 0 {
			dupClients++
			if c.victim.Load() {
				dupVictims++
			}
			if dupClients <= 3 {
				res.notes = append(res.notes, fmt.Sprintf("follower %d (victim %v, %d dials): first duplicate: %s", c.idx, c.victim.Load(), c.dials.Load(), st.firstDup))
			}
		}
		g := 1
		if c.victim.Load() {
			g = 0
		}
		a := c.atKill
		res.preReloads += a.reloads
		res.preGaps += a.gaps
		res.preDups += a.dups
		res.preLost += a.skipped
		res.postReloads[g] += st.reloads - a.reloads
		res.postGaps[g] += st.gaps - a.gaps
		res.postDups[g] += st.dups - a.dups
		res.postLost[g] += st.skipped - a.skipped
		for k, v := range st.reasons {
			reasons[k] += v
		}
		res.dups += st.dups
		res.reloads += st.reloads
		res.gaps += st.gaps
		res.epochs += st.epochs
		res.lost += st.skipped
		if st.last < res.final {
			res.behind++
			if st.last == 0 {
				res.lost += int64(res.final - k)
			} else {
				res.lost += int64(res.final - st.last)
			}
		}
		res.c1013 += c.closes1013.Load()
		res.dialErrs += c.dialErrs.Load()
	}
	if len(reasons) > 0 {
		res.notes = append(res.notes, fmt.Sprintf("reloads by reason: %v", reasons))
	}
	if d := s.dialErrSummary(); d != "" {
		res.notes = append(res.notes, "dial errors:"+d)
	}
	if dupClients > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d followers got duplicates, %d of them the killed node's", dupClients, dupVictims))
	}
	logf(log, "%s: final offset %d: lost %d, duplicates %d, reloads %d, gaps recovered %d, 1013 closes %d, dial errors %d; load %s",
		kind, res.final, res.lost, res.dups, res.reloads, res.gaps, res.c1013, res.dialErrs, loadAvg())
	return res
}

func (s *storm) dialErrSummary() string {
	kinds := map[string]int{}
	for _, c := range s.clients {
		if e, ok := c.errKind.Load().(string); ok && e != "" {
			kinds[e]++
		}
	}
	if len(kinds) == 0 {
		return ""
	}
	var parts []string
	for k, v := range kinds {
		parts = append(parts, fmt.Sprintf("%s: %d", k, v))
	}
	slices.Sort(parts)
	return " (last dial errors: " + strings.Join(parts, ", ") + ")"
}

// pct is the q-quantile of sorted durations.
func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// wsConn is an upgraded client connection with a buffered reader.
type wsConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
	wmu sync.Mutex
}

func (s *storm) dial(ctx context.Context, i int, url string) (*wsConn, error) {
	wd := s.d.wsDialer(i)
	c, br, _, err := wd.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	r := br
	if r == nil {
		r = bufio.NewReaderSize(c, 2048)
	}
	return &wsConn{c: c, r: r}, nil
}

// read returns the next data frame's payload (valid until the next read),
// answering pings; a close frame gives its status code and io.EOF.
func (w *wsConn) read() (ws.OpCode, []byte, ws.StatusCode, error) {
	for {
		h, err := ws.ReadHeader(w.r)
		if err != nil {
			return 0, nil, 0, err
		}
		if h.Length > maxFrame {
			return 0, nil, 0, errors.New("frame too large")
		}
		n := int(h.Length)
		if cap(w.buf) < n {
			w.buf = make([]byte, n, max(n, 512))
		}
		p := w.buf[:n]
		if _, err := io.ReadFull(w.r, p); err != nil {
			return 0, nil, 0, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			w.write(ws.NewPongFrame(slices.Clone(p)))
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code := ws.StatusCode(0)
			if len(p) >= 2 {
				code = ws.StatusCode(int(p[0])<<8 | int(p[1]))
			}
			return ws.OpClose, nil, code, io.EOF
		}
		if !h.Fin {
			return 0, nil, 0, errors.New("fragmented frame")
		}
		return h.OpCode, p, 0, nil
	}
}

func (w *wsConn) write(f ws.Frame) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_ = w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteFrame(w.c, ws.MaskFrameInPlace(f))
}

// follow runs a follower until ctx ends: connect (the first time to its
// own node, holding a slot of sem), read, and on a drop, a 1013 close or
// a gap, reconnect to another node with ?since=&epoch=.
func (s *storm) follow(ctx context.Context, c *stormClient, sem chan struct{}) {
	node := c.idx % 3
	first := true
	failures := 0
	for ctx.Err() == nil {
		url := s.urls[node]
		c.mu.Lock()
		if c.st.last > 0 {
			url += fmt.Sprintf("?since=%d&epoch=%s", c.st.last, c.st.epoch)
		}
		c.mu.Unlock()
		if first {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		c.dials.Add(1)
		w, err := s.dial(ctx, c.idx, url)
		if first {
			<-sem
		}
		if err != nil {
			c.dialErrs.Add(1)
			c.errKind.Store(errClass(err))
			failures++
			node = s.nextNode(c.idx, node)
			if failures%3 == 0 {
				// every node refused: back off a little
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(min(failures, 20)) * 50 * time.Millisecond):
				}
			}
			continue
		}
		first = false
		failures = 0
		c.mu.Lock()
		c.st.conns++
		c.st.connCount = 0
		c.mu.Unlock()
		c.node.Store(int32(node))
		c.up.Store(true)
		if c.victim.Load() && int32(node+1) != s.dead.Load() && c.reconnAt.Load() == 0 {
			c.reconnAt.Store(max(1, nowNs()-s.killNs.Load()))
		}
		stop := context.AfterFunc(ctx, func() { _ = w.c.SetReadDeadline(time.Now()) })
		s.readLoop(c, w, node)
		stop()
		c.up.Store(false)
		_ = w.c.Close()
		node = s.nextNode(c.idx, node)
	}
}

// nextNode is where a follower goes after node: one of the two others,
// half of the followers to each.
func (s *storm) nextNode(idx, node int) int {
	return (node + 1 + idx%2) % 3
}

// readLoop reads until the follower must reconnect.
func (s *storm) readLoop(c *stormClient, w *wsConn, node int) {
	for {
		op, p, code, err := w.read()
		if err != nil {
			if op == ws.OpClose && code == 1013 {
				c.closes1013.Add(1)
			} else {
				c.drops.Add(1)
			}
			return
		}
		if op != ws.OpText {
			continue
		}
		f, ok := parseChat(p)
		if !ok {
			continue
		}
		c.mu.Lock()
		v := c.st.observe(f)
		last := c.st.last
		c.mu.Unlock()
		c.last.Store(last)
		if c.victim.Load() && c.recovered.Load() == 0 && c.reloaded.Load() == 0 && s.killNs.Load() != 0 {
			switch {
			case v == vReload || v == vEpoch:
				c.reloaded.Store(max(1, nowNs()-s.killNs.Load()))
			case v == vAccept && int32(node+1) != s.dead.Load() && last >= s.target.Load():
				// A message taken on the new node, contiguous with the
				// run: the server's recovery worked (a follower already
				// at the target hears its own join at once).
				c.recovered.Store(max(1, nowNs()-s.killNs.Load()))
			}
		}
		if v == vGap {
			return
		}
	}
}

// publish sends -rate messages/s on node 1 until stop closes, then
// waits to hear its own last message and stores its offset in final.
// It reconnects (with since) if its connection drops.
func (s *storm) publish(ctx context.Context, stop chan struct{}, final *atomic.Uint64) {
	interval := time.Duration(float64(time.Second) / s.o.rate)
	var seq int64
	tag := "storm-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10) + "-"
	var heardSeq atomic.Int64 // the publisher's last message heard back, by seq
	heard := make(chan struct{}, 1)
	var st followState
	for ctx.Err() == nil {
		url := s.urls[0]
		if st.last > 0 {
			url += fmt.Sprintf("?since=%d&epoch=%s", st.last, st.epoch)
		}
		w, err := s.dial(ctx, 1<<20, url)
		if err != nil {
			s.pubErr.Store("dial: " + errClass(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for {
				op, p, _, err := w.read()
				if err != nil {
					return
				}
				if op != ws.OpText {
					continue
				}
				f, ok := parseChat(p)
				if !ok || !f.hasOff {
					continue
				}
				if string(f.typ) == "message" && bytes.HasPrefix(f.text, []byte(tag)) {
					s.pubLast.Store(f.offset)
					if n, err := strconv.ParseInt(string(f.text[len(tag):]), 10, 64); err == nil && n > heardSeq.Load() {
						final.Store(f.offset)
						heardSeq.Store(n)
						select {
						case heard <- struct{}{}:
						default:
						}
					}
				}
				if f.offset > st.last {
					st.last, st.epoch = f.offset, string(f.epoch)
				}
			}
		}()
		tick := time.NewTicker(interval)
		stopped := false
	send:
		for {
			select {
			case <-ctx.Done():
				break send
			case <-stop:
				stopped = true
				break send
			case <-readDone:
				break send
			case <-tick.C:
				seq++
				if err := w.write(ws.NewTextFrame([]byte(tag + strconv.FormatInt(seq, 10)))); err != nil {
					s.pubErr.Store("write: " + err.Error())
					break send
				}
				s.pubSent.Add(1)
			}
		}
		tick.Stop()
		if stopped {
			timeout := time.After(s.o.finalMax)
		wait:
			for heardSeq.Load() < seq {
				select {
				case <-heard:
				case <-readDone:
					s.pubErr.Store("connection lost before the last message came back")
					final.Store(0)
					break wait
				case <-timeout:
					s.pubErr.Store("the last message did not come back")
					final.Store(0)
					break wait
				case <-ctx.Done():
					break wait
				}
			}
			_ = w.c.Close()
			<-readDone
			return
		}
		_ = w.c.Close()
		<-readDone
		if ctx.Err() == nil {
			s.pubErr.Store("connection dropped (reconnected)")
		}
	}
}

func printStorm(w io.Writer, o *stormOpts, rs []*stormResult) {
	fmt.Fprintf(w, "\nreconnect-storm: 3 nodes, %d followers in /chat/%s, 1 publisher at %s msg/s on node 1, history %d; node 3 SIGKILLed after warm-up; %d CPUs\n\n",
		o.clients, o.room, fmtRate(o.rate), o.history, runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "broker\tclients\tkilled node's\trecovered\treconnect p50/p99/max\trecovery p50\tp99\tmax (all)\tkill offset\tfinal\tlost\tduplicates\treloads\tgaps recovered\t1013s\tload before → after\ttook\t")
	for _, r := range rs {
		if r.err != "" && r.final == 0 {
			fmt.Fprintf(tw, "%s\t%d\tfailed\t\t\t\t\t\t\t\t\t\t\t\t\t%s → %s\t%s\t\n", r.kind, r.clients, r.load0, r.load1, r.took.Round(time.Second))
			continue
		}
		rc := "-"
		if n := len(r.reconnect); n > 0 {
			rc = fmt.Sprintf("%s/%s/%s", ms(pct(r.reconnect, 0.5)), ms(pct(r.reconnect, 0.99)), ms(r.reconnect[n-1]))
		}
		p50, p99, mx := "-", "-", "-"
		if n := len(r.recovery); n > 0 {
			p50, p99, mx = ms(pct(r.recovery, 0.5)), ms(pct(r.recovery, 0.99)), ms(r.recovery[n-1])
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s → %s\t%s\t\n", r.kind, r.clients, r.victims,
			len(r.recovery), rc, p50, p99, mx, r.killOffset, r.final, r.lost, r.dups, r.reloads, r.gaps, r.c1013,
			r.load0, r.load1, r.took.Round(time.Second))
	}
	_ = tw.Flush()
	for _, r := range rs {
		if r.err != "" {
			fmt.Fprintf(w, "%s: %s\n", r.kind, r.err)
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "%s: %s\n", r.kind, n)
		}
		if r.final > 0 {
			fmt.Fprintf(w, "%s: published %d; %d followers short of the final offset; epoch changes %d; dial errors %d\n",
				r.kind, r.published, r.behind, r.epochs, r.dialErrs)
			fmt.Fprintf(w, "%s: the killed node's %d followers: %d recovered, %d told to reload, %d neither\n",
				r.kind, r.victims, len(r.recovery), r.reloadedV, r.unrecov)
			fmt.Fprintf(w, "%s: warm-up (before the kill): reloads %d, gaps %d, duplicates %d, offsets skipped %d\n",
				r.kind, r.preReloads, r.preGaps, r.preDups, r.preLost)
			for g, name := range []string{"the killed node's followers", "the other followers"} {
				fmt.Fprintf(w, "%s: after the kill, %s: reloads %d, gaps %d, duplicates %d, offsets skipped by reloads %d\n",
					r.kind, name, r.postReloads[g], r.postGaps[g], r.postDups[g], r.postLost[g])
			}
		}
	}
	fmt.Fprintf(w, "configs and logs: %s\n", o.out)
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 0, 64) + "ms"
}
