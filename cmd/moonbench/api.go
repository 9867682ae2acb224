//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// apiPublishCmd is the mode that measures the server HTTP API:
//
//	moonbench api-publish [-url ws://127.0.0.1:8765/room] [-api http://127.0.0.1:8766] [-key KEY] [-subs 1000] [-pubs 8]
//
// -subs WebSocket subscribers sit in one room; -pubs goroutines publish
// into it through POST /api/publish (binary payloads, base64, stamped as
// the broadcast scenario's), closed loop or at -rate requests/s in all.
// It reports API requests/s and their latency, and the delivery latency
// from just before a request is sent to the subscriber reading the
// message, with lost messages counted per subscriber and publisher.
const apiPublishCmd = "api-publish"

const apiUsage = `moonbench api-publish: publish through the server HTTP API to a room of WebSocket subscribers

Usage:
  moonbench api-publish [-url ws://127.0.0.1:8765/room] [-api http://127.0.0.1:8766] [-key KEY]
                        [-subs 1000] [-pubs 8] [-rate 0] [-size 64] [-duration 5s] [-pid PID]

Against a running moonwire whose route (-url) joins every connection to
-room and whose [api] listens on -api with the key -key, as
cmd/moonbench/testdata/api.toml does. -subs subscribers connect first;
then -pubs goroutines, each with a kept-alive HTTP connection, POST
/api/publish {"room": ..., "binary": base64} one request at a time
(-rate 0) or at -rate requests/s in all. Every payload carries its send
time, publisher and sequence number (see README.md): the subscribers
check every message and measure its delivery latency.

Flags:
`

// apiResult is what api-publish reports.
type apiResult struct {
	common
	Subs           int              `json:"subs"`
	Pubs           int              `json:"pubs"`
	Size           int              `json:"size"`
	Rate           float64          `json:"rate_target"`
	Requests       int64            `json:"requests"`
	RequestsPerS   float64          `json:"requests_per_s"`
	RequestErrors  int64            `json:"request_errors"`
	RequestErrKind map[string]int64 `json:"request_error_kinds,omitempty"`
	Request        latency          `json:"request_latency"`
	Deliveries     int64            `json:"deliveries"`
	DeliveriesPerS float64          `json:"deliveries_per_s"`
	Expected       int64            `json:"expected"`
	Delivered      int64            `json:"delivered"`
	Lost           int64            `json:"lost"`
	Gaps           int64            `json:"gaps"`
	OutOfOrder     int64            `json:"out_of_order"`
	traffic
	DrainS   float64 `json:"drain_s"`
	Delivery latency `json:"delivery_latency"`
}

func (r *apiResult) rows() [][2]string {
	rows := r.common.rows()
	target := "closed loop, one request at a time per publisher"
	if r.Rate > 0 {
		target = fmtRate(r.Rate) + "/s target"
	}
	rows = append(rows,
		[2]string{"connections", fmt.Sprintf("%d subscribers; %d API publishers (%s), %d-byte binary messages", r.Subs, r.Pubs, target, r.Size)},
		[2]string{"API requests", fmt.Sprintf("%d (%s/s), %d failed%s", r.Requests, fmtRate(r.RequestsPerS), r.RequestErrors, fmtKinds(r.RequestErrKind))},
		[2]string{"request latency", r.Request.String()},
		[2]string{"deliveries", fmt.Sprintf("%d (%s/s)", r.Deliveries, fmtRate(r.DeliveriesPerS))},
		[2]string{"delivery latency", r.Delivery.String()},
		[2]string{"lost", fmt.Sprintf("%d of %d expected (gaps %d, out of order %d; waited %.2fs after the window)", r.Lost, r.Expected, r.Gaps, r.OutOfOrder, r.DrainS)},
	)
	rows = append(rows, r.traffic.rows()...)
	return rows
}

type apiOpts struct {
	cfg  *config
	api  string
	key  string
	room string
}

func parseAPIFlags(args []string, stderr io.Writer) (*apiOpts, error) {
	o := &apiOpts{cfg: &config{scenario: apiPublishCmd}}
	c := o.cfg
	fs := flag.NewFlagSet("moonbench api-publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "ws://127.0.0.1:8765/room", "the subscribers' WebSocket `URL` (a comma-separated list: round-robin)")
	fs.StringVar(&o.api, "api", "http://127.0.0.1:8766", "the server API's base `URL`")
	fs.StringVar(&o.key, "key", "moonbench-api-key-0123456789", "the API key (as testdata/api.toml's)")
	fs.StringVar(&o.room, "room", "bench", "the room the route joins its connections to")
	fs.IntVar(&c.subs, "subs", 1000, "subscriber connections")
	fs.IntVar(&c.pubs, "pubs", 8, "API publishers: goroutines, one request in flight each")
	fs.Float64Var(&c.rate, "rate", 0, "requests/s over all publishers; 0: closed loop")
	fs.IntVar(&c.size, "size", 64, "payload `bytes` (min 16)")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measurement window")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "run before the window starts, not measured")
	fs.DurationVar(&c.drain, "drain", 3*time.Second, "how long to wait after the window for deliveries still in flight")
	fs.IntVar(&c.workers, "workers", runtime.NumCPU(), "epoll worker goroutines driving the subscribers")
	fs.IntVar(&c.dialConc, "dial-concurrency", 64, "connections dialed at once while setting up")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "timeout of one dial + upgrade")
	fs.DurationVar(&c.closeWait, "close-wait", 3*time.Second, "at the end, how long to wait for the server to close the connections")
	fs.Var(&c.pids, "pid", "server process `id` (comma-separated for several): sample its CPU and RSS")
	fs.BoolVar(&c.jsonOnly, "json", false, "print only the JSON line")
	fs.StringVar(&c.label, "label", "", "free text copied into the JSON line")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), apiUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.urls = splitList(c.url)
	o.api = strings.TrimSuffix(o.api, "/")
	switch {
	case c.subs < 1 || c.pubs < 1:
		return nil, errors.New("api-publish needs -subs >= 1 and -pubs >= 1")
	case c.size < minBroadcastSize:
		return nil, fmt.Errorf("api-publish needs -size >= %d (timestamp, publisher, sequence)", minBroadcastSize)
	case c.rate < 0 || c.duration <= 0 || c.warmup < 0 || c.workers < 1 || c.dialConc < 1:
		return nil, errors.New("-rate, -warmup must not be negative; -duration, -workers, -dial-concurrency must be positive")
	}
	return o, nil
}

func apiPublish(args []string, stdout, stderr io.Writer) int {
	return runMode("moonbench:", args, stderr, parseAPIFlags, func(ctx context.Context, o *apiOpts) error {
		res, err := runAPIPublish(ctx, o)
		if err != nil {
			return err
		}
		return report(stdout, res, o.cfg.jsonOnly)
	})
}

// apiPub is one API publisher's counters.
type apiPub struct {
	hist   hist // request latency, in the window
	reqs   int64
	errs   map[string]int64
	nerrs  int64
	client *http.Client
}

func runAPIPublish(ctx context.Context, o *apiOpts) (*apiResult, error) {
	cfg := o.cfg
	lim, d, err := prepare(cfg, cfg.subs, cfg.dialConc)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: cfg.pubs, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	// One request first: a wrong key or address fails here, not as
	// thousands of errors.
	if err := apiPost(ctx, client, o, "/api/rooms", []byte("{}")); err != nil {
		return nil, fmt.Errorf("the API at %s: %w", o.api, err)
	}
	sp := &spec{size: cfg.size, tmpl: newTemplate(padding(cfg.size, 16)), subs: int64(cfg.subs)}
	sp.key = sp.tmpl.mask
	for i := 0; i < cfg.pubs; i++ {
		sp.pubs = append(sp.pubs, &publisher{idx: uint32(i)})
	}
	dr := dialAll(ctx, d, cfg.subs, cfg.dialConc, nil)
	if dr.errors > 0 {
		closeRaw(dr.conns)
		return nil, fmt.Errorf("setting up: %s", describeDialErrors(dr, cfg.subs, lim))
	}
	e, err := newEngine(cfg.workers, sp)
	if err != nil {
		closeRaw(dr.conns)
		return nil, err
	}
	for i, rc := range dr.conns {
		dr.conns[i].fd = -1
		if err := e.workers[i%len(e.workers)].add(rc, roleSub, nil); err != nil {
			return nil, err
		}
	}
	start := nowNs() + int64(100*time.Millisecond) // the last joins land
	sp.warmEnd = start + int64(cfg.warmup)
	sp.end = sp.warmEnd + int64(cfg.duration)

	pubs := make([]*apiPub, cfg.pubs)
	var wg sync.WaitGroup
	var stopped atomic.Bool
	for i := range pubs {
		p := &apiPub{errs: map[string]int64{}, client: client}
		pubs[i] = p
		wg.Go(func() { o.publishLoop(ctx, p, sp, sp.pubs[i], start, &stopped) })
	}
	res := &apiResult{common: newCommon(cfg, lim)}
	window := res.measure(ctx, e, cfg, sp.warmEnd, sp.end)
	stopped.Store(true)
	wg.Wait()

	expected := func() int64 {
		var m int64
		for _, p := range sp.pubs {
			m += p.sentCounted.Load()
		}
		return m * sp.subs
	}
	drainStart := time.Now()
	for e.delivCounted() < expected() && time.Since(drainStart) < cfg.drain && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	res.DrainS = round2(time.Since(drainStart).Seconds())
	exp, got := expected(), e.delivCounted()
	st := e.shutdown(cfg.closeWait)

	var all hist
	for _, p := range pubs {
		all.merge(&p.hist)
		res.Requests += p.reqs
		res.RequestErrors += p.nerrs
		for k, v := range p.errs {
			if res.RequestErrKind == nil {
				res.RequestErrKind = map[string]int64{}
			}
			res.RequestErrKind[k] += v
		}
	}
	res.WindowS = round2(window.Seconds())
	res.Subs, res.Pubs, res.Size, res.Rate = cfg.subs, cfg.pubs, cfg.size, cfg.rate
	res.Deliveries = st.ops
	if window > 0 {
		res.RequestsPerS = round2(float64(res.Requests) / window.Seconds())
		res.DeliveriesPerS = round2(float64(st.ops) / window.Seconds())
	}
	res.Expected, res.Delivered, res.Lost = exp, got, max(0, exp-got)
	res.Gaps, res.OutOfOrder = st.gaps, st.outOfOrder
	res.take(st, 0)
	res.Request = newLatency(&all)
	res.Delivery = newLatency(&st.hist)
	res.engineLoad(st)
	res.perOp(res.Requests, "request")
	return res, nil
}

// publishLoop publishes until the window ends: one request at a time,
// paced at this publisher's share of -rate when it is set.
func (o *apiOpts) publishLoop(ctx context.Context, p *apiPub, sp *spec, pub *publisher, start int64, stopped *atomic.Bool) {
	cfg := o.cfg
	payload := append([]byte(nil), sp.tmpl.payload...)
	var interval int64
	if cfg.rate > 0 {
		interval = int64(float64(time.Second) * float64(cfg.pubs) / cfg.rate)
	}
	next := start + int64(pub.idx)*max(interval/int64(cfg.pubs), 1)
	prefix := `{"room":` + quote(o.room) + `,"binary":"`
	body := make([]byte, 0, len(prefix)+base64.StdEncoding.EncodedLen(len(payload))+2)
	for seq := uint32(1); ctx.Err() == nil && !stopped.Load(); seq++ {
		if interval > 0 || seq == 1 {
			if sleepUntil(ctx, next) != nil {
				return
			}
			next += interval
		}
		now := nowNs()
		if now >= sp.end {
			return
		}
		binary.LittleEndian.PutUint64(payload[0:8], uint64(now))
		binary.LittleEndian.PutUint32(payload[8:12], pub.idx)
		binary.LittleEndian.PutUint32(payload[12:16], seq)
		body = append(body[:0], prefix...)
		body = base64.StdEncoding.AppendEncode(body, payload)
		body = append(body, `"}`...)
		inWindow := now >= sp.warmEnd
		if inWindow {
			pub.sentCounted.Add(1) // every subscriber should get it
		}
		err := apiPost(ctx, p.client, o, "/api/publish", body)
		if inWindow {
			p.reqs++
			p.hist.add(nowNs() - now)
			if err != nil {
				p.nerrs++
				p.errs[errClass(err)]++
			}
		}
	}
}

// apiPost posts body to the API's path and checks for a 200.
func apiPost(ctx context.Context, c *http.Client, o *apiOpts, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.api+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "apikey "+o.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// quote is a JSON string (room names are the operator's, and plain).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' || r < 0x20 {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
