package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router"
)

func feedCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// metricSum is the sum of a family's values in a /metrics scrape.
func metricSum(t testing.TB, base, name string, filter map[string]string) float64 {
	t.Helper()
	mf := scrape(t, base)[name]
	if mf == nil {
		return 0
	}
	sum := 0.0
	for _, m := range mf.GetMetric() {
		ls := labelsOf(m)
		match := true
		for k, v := range filter {
			match = match && ls[k] == v
		}
		if match {
			sum += valueOf(mf.GetType(), m)
		}
	}
	return sum
}

// TestFeed: series then snapshot at once; the snapshot's totals equal the
// source's figures and /metrics; rates follow changes, and a counter that
// goes down gives a rate of 0.
func TestFeed(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	env := newDash(t, src, Options{})
	feed := openFeed(t, feedCtx(t), env.srv.URL)

	ev, data, err := feed.next()
	if err != nil || ev != "series" {
		t.Fatalf("first event %q %s: %v", ev, data, err)
	}
	var series Series
	if err := json.Unmarshal(data, &series); err != nil || series.Interval != 1 || series.Points == nil {
		t.Fatalf("series %s: %v", data, err)
	}
	snap := feed.snapshot(t)
	want := Totals{
		Connections: 7, Accepted: 40, Refused: map[string]int64{"401": 9, "429": 4},
		MessagesIn: 157, MessagesOut: 608, BytesIn: 2490, BytesOut: 10380,
		Broadcasts: 11, Deliveries: 220, SlowCloses: 2, QueueDrops: 3, ProtocolErrors: 5,
		ReloadsOK: 3, ReloadsFailed: 2,
	}
	if got, _ := json.Marshal(snap.Totals); string(got) != mustJSON(t, want) {
		t.Errorf("totals\n got %s\nwant %s", got, mustJSON(t, want))
	}
	if snap.Node != "node-1" || snap.Version != "v9.9" || snap.Uptime != 90 || snap.Draining ||
		!snap.Actions.Close || !snap.Actions.Reload || snap.Errors == nil || snap.Reloads == nil || snap.Broker != nil || snap.Nodes != nil {
		t.Errorf("snapshot: %+v", snap)
	}
	if len(snap.Routes) != 2 {
		t.Fatalf("routes: %+v", snap.Routes)
	}
	echo := snap.Routes[0]
	if echo.Path != "/echo" || echo.Script != "echo.lua" || echo.Version != "v2" || echo.LoadedAt != reloadAt.UnixMilli() ||
		echo.Connections != 3 || echo.MessagesIn != 107 || echo.MessagesOut != 108 || echo.BytesIn != 1590 || echo.BytesOut != 1380 ||
		echo.P50 != -1 || echo.P99 != -1 {
		t.Errorf("/echo: %+v", echo)
	}
	if snap.Runtime.HeapBytes == 0 || snap.Runtime.Goroutines == 0 {
		t.Errorf("runtime: %+v", snap.Runtime)
	}
	if snap.Point.At != snap.At || snap.Point.Connections != 7 {
		t.Errorf("point: %+v", snap.Point)
	}
	for _, p := range series.Points {
		if p.At >= snap.At {
			t.Errorf("series point at %d not before the snapshot's %d", p.At, snap.At)
		}
	}

	// The same figures /metrics reports (the source is still).
	for name, v := range map[string]uint64{
		"moonwire_messages_received_total":    snap.Totals.MessagesIn,
		"moonwire_messages_sent_total":        snap.Totals.MessagesOut,
		"moonwire_received_bytes_total":       snap.Totals.BytesIn,
		"moonwire_sent_bytes_total":           snap.Totals.BytesOut,
		"moonwire_handshakes_accepted_total":  snap.Totals.Accepted,
		"moonwire_broadcast_deliveries_total": snap.Totals.Deliveries,
		"moonwire_slow_consumer_closes_total": snap.Totals.SlowCloses,
	} {
		if m := metricSum(t, env.srv.URL+"", name, nil); m != float64(v) {
			t.Errorf("%s: /metrics %v, snapshot %d", name, m, v)
		}
	}

	// Traffic: the rates show it, then go back to 0.
	src.mu.Lock()
	src.rstats[1].MessagesIn += 1000
	src.stats.HandshakesRefused[401] += 50
	src.mu.Unlock()
	snap = feed.waitSnapshot(t, func(s *Snapshot) bool { return s.Totals.MessagesIn == 1157 })
	if snap.Rates.MessagesIn <= 0 || snap.Routes[1].InPerSec <= 0 || snap.Routes[0].InPerSec != 0 ||
		snap.Rates.Refused["401"] <= 0 || snap.Point.MessagesIn != snap.Rates.MessagesIn || snap.Point.Refused["401"] != snap.Rates.Refused["401"] {
		t.Errorf("after traffic: rates %+v, routes %+v, point %+v", snap.Rates, snap.Routes, snap.Point)
	}
	snap = feed.snapshot(t)
	if snap.Rates.MessagesIn != 0 || snap.Rates.Refused["401"] != 0 {
		t.Errorf("without traffic: rates %+v", snap.Rates)
	}

	// The drained /echo leaves: the per-route sum goes down; no negative
	// rate.
	src.mu.Lock()
	src.rstats = src.rstats[:2]
	src.mu.Unlock()
	snap = feed.waitSnapshot(t, func(s *Snapshot) bool { return s.Totals.MessagesIn == 1150 })
	if snap.Rates.MessagesIn != 0 || snap.Rates.MessagesOut != 0 || snap.Routes[0].InPerSec != 0 {
		t.Errorf("after a counter went down: rates %+v, routes %+v", snap.Rates, snap.Routes)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFeedSeries: a feed opened later gets the history, oldest first, and
// its first snapshot's point follows the series' last.
func TestFeedSeries(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{})
	first := openFeed(t, feedCtx(t), env.srv.URL)
	first.waitSnapshot(t, func(*Snapshot) bool { return env.d.sampler.hub.pointCount() >= 5 })

	feed := openFeed(t, feedCtx(t), env.srv.URL)
	ev, data, err := feed.next()
	if err != nil || ev != "series" {
		t.Fatalf("first event %q: %v", ev, err)
	}
	var series Series
	if err := json.Unmarshal(data, &series); err != nil {
		t.Fatal(err)
	}
	if len(series.Points) < 4 {
		t.Fatalf("%d points in the series", len(series.Points))
	}
	for i := 1; i < len(series.Points); i++ {
		if series.Points[i].At < series.Points[i-1].At {
			t.Fatalf("series not oldest first at %d", i)
		}
	}
	snap := feed.snapshot(t)
	if last := series.Points[len(series.Points)-1].At; snap.Point.At <= last {
		t.Errorf("snapshot point at %d, not after the series' last %d", snap.Point.At, last)
	}
}

// TestFeedLimit: at most maxFeeds at once; a closed one frees its place.
func TestFeedLimit(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{})
	cancels := make([]context.CancelFunc, 0, maxFeeds)
	for range maxFeeds {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		cancels = append(cancels, cancel)
		f := openFeed(t, ctx, env.srv.URL)
		if ev, _, err := f.next(); err != nil || ev != "series" {
			t.Fatalf("feed: %q %v", ev, err)
		}
	}
	resp, body := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/feed", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(errorOf(t, body), "too many") {
		t.Errorf("feed %d: %d %s, want 503", maxFeeds+1, resp.StatusCode, body)
	}
	cancels[0]()
	waitFor(t, "a feed to close", func() bool { return env.d.sampler.hub.feedCount() < maxFeeds })
	f := openFeed(t, feedCtx(t), env.srv.URL)
	if ev, _, err := f.next(); err != nil || ev != "series" {
		t.Fatalf("feed after one closed: %q %v", ev, err)
	}
}

// shrinkingListener gives connections from 127.0.0.2 a small send buffer.
type shrinkingListener struct{ net.Listener }

func (l shrinkingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok && tc.RemoteAddr().(*net.TCPAddr).IP.Equal(net.IPv4(127, 0, 0, 2)) {
		if err := tc.SetWriteBuffer(4096); err != nil {
			c.Close()
			return nil, fmt.Errorf("shrinking the send buffer: %w", err)
		}
	}
	return c, nil
}

// waitFor polls cond every 10 ms for up to 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFeedStuckReader: a client that stops reading is dropped once a
// write stalls past the write timeout, and the others keep getting
// snapshots meanwhile.
func TestFeedStuckReader(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	reg := prometheus.NewPedanticRegistry()
	obs, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	h, d, err := newAdmin(src, reg, Options{
		Observer: obs, Context: sctx, SampleInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), feedWriteTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The stuck client connects from 127.0.0.2; its connection gets a
	// tiny send buffer on the server, so that its writes stall after a
	// few KiB rather than after the megabytes of an autotuned buffer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = shrinkingListener{ln}
	srv.Start()
	t.Cleanup(func() { cancel(); srv.Close(); <-d.sampler.done })
	// Snapshots of some 40 KiB: 20 errors of 2 KiB.
	for i := range MaxErrors {
		obs.ScriptError("/echo", "on_message", fmt.Sprint("c", i), errors.New(strings.Repeat("e", 500)), strings.Repeat("t", 1500))
	}

	// A reader that keeps reading.
	good := openFeed(t, feedCtx(t), srv.URL)
	snaps := make(chan int64, 1024)
	go func() {
		defer close(snaps)
		for {
			ev, data, err := good.next()
			if err != nil {
				return
			}
			if ev == "snapshot" {
				var s Snapshot
				if json.Unmarshal(data, &s) == nil {
					select {
					case snaps <- s.At:
					default:
					}
				}
			}
		}
	}()

	// A raw TCP client with a tiny receive window that never reads.
	dialer := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		},
	}
	stuck, err := dialer.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := fmt.Fprintf(stuck, "GET /dashboard/feed HTTP/1.1\r\nHost: %s\r\n\r\n", ln.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both feeds", func() bool { return d.sampler.hub.feedCount() == 2 })
	waitFor(t, "the stuck feed to be dropped", func() bool { return d.sampler.hub.feedCount() == 1 })

	// The good reader still gets new snapshots.
	drain := func() int64 {
		var last int64
		for {
			select {
			case at, ok := <-snaps:
				if !ok {
					t.Fatal("the good feed ended")
				}
				last = at
			default:
				return last
			}
		}
	}
	before := drain()
	ctx := feedCtx(t)
	for {
		select {
		case at, ok := <-snaps:
			if !ok {
				t.Fatal("the good feed ended")
			}
			if at > before {
				return
			}
		case <-ctx.Done():
			t.Fatal("no snapshot on the good feed after the stuck one was dropped")
		}
	}
}

// TestFeedKeepsGoingWhileNodesBlock: a broker that does not answer holds
// up neither the tick nor a second question; its answer shows up later.
func TestFeedKeepsGoingWhileNodesBlock(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	gate := make(chan struct{})
	src.nodesGate = gate
	src.nodes = []NodeSummary{{ID: "node-1", Self: true, Connections: 7}, {ID: "node-2", Connections: 3}}
	src.nodesOK = true
	env := newDash(t, src, Options{})
	feed := openFeed(t, feedCtx(t), env.srv.URL)
	waitFor(t, "the nodes question", func() bool { return src.nodesCalls.Load() >= 1 })
	var last int64
	for range 5 {
		s := feed.waitSnapshot(t, func(s *Snapshot) bool { return s.At > last })
		last = s.At
		if s.Nodes != nil {
			t.Fatalf("nodes before the broker answered: %+v", s.Nodes)
		}
	}
	if n := src.nodesCalls.Load(); n != 1 {
		t.Errorf("%d questions while one was pending, want 1", n)
	}
	close(gate)
	s := feed.waitSnapshot(t, func(s *Snapshot) bool { return s.Nodes != nil })
	if len(s.Nodes) != 2 || s.Nodes[1].ID != "node-2" || !s.Nodes[0].Self {
		t.Errorf("nodes: %+v", s.Nodes)
	}
}

// TestHandlerFigures: script errors, timeouts and latency from the
// Observer reach the snapshot and match /metrics.
func TestHandlerFigures(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{})
	feed := openFeed(t, feedCtx(t), env.srv.URL)
	feed.waitSnapshot(t, func(*Snapshot) bool { return true })
	for range 100 {
		env.obs.Callback("/echo", "on_message", time.Millisecond, nil)
	}
	for range 3 {
		env.obs.Callback("/chat/{room}", "on_message", 100*time.Microsecond, errors.New("boom"))
	}
	for range 2 {
		env.obs.Callback("/chat/{room}", "on_open", time.Second, fmt.Errorf("on_open: %w", lua.ErrTimeout))
	}
	env.obs.ScriptError("/chat/{room}", "on_message", "n1-3", errors.New("chat.lua:3: boom"), "stack traceback:\n\tchat.lua:3: in function 'on_message'")
	snap := feed.waitSnapshot(t, func(s *Snapshot) bool {
		return s.Totals.ScriptErrors == 3 && s.Totals.ScriptTimeouts == 2 && s.Routes[0].P50 != -1 && len(s.Errors) == 1
	})
	// 100 observations of 1 ms, all in the bucket (0.78125 ms, 1.953125 ms].
	approx := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	if echo := snap.Routes[0]; !approx(echo.P50, 0.78125+1.171875*0.5) || !approx(echo.P99, 0.78125+1.171875*0.99) {
		t.Errorf("/echo p50 %v p99 %v", echo.P50, echo.P99)
	}
	if chat := snap.Routes[1]; chat.Errors != 3 || chat.Timeouts != 2 || chat.P50 == -1 {
		t.Errorf("/chat/{room}: %+v", chat)
	}
	if e := snap.Errors[0]; e.Route != "/chat/{room}" || e.Conn != "n1-3" || e.Error != "chat.lua:3: boom" || !strings.Contains(e.Traceback, "on_message") || e.At == 0 {
		t.Errorf("error entry: %+v", e)
	}
	if m := metricSum(t, env.srv.URL, "moonwire_handler_errors_total", map[string]string{"kind": "error"}); m != 3 {
		t.Errorf("/metrics errors %v", m)
	}
}

func TestWindowQuantile(t *testing.T) {
	t.Parallel()
	type counts = [len(handlerBucketBounds) + 1]uint64
	cum := func(per map[int]uint64) counts { // per-bucket counts to cumulative
		var c counts
		var run uint64
		for i := range c {
			run += per[i]
			c[i] = run
		}
		return c
	}
	ms := func(i int) float64 { return handlerBucketBounds[i] * 1000 }
	for _, tc := range []struct {
		name      string
		now, base counts
		q, want   float64
	}{
		{"none", cum(nil), cum(nil), 0.5, -1},
		{"none in the window", cum(map[int]uint64{4: 50}), cum(map[int]uint64{4: 50}), 0.5, -1},
		{"first bucket starts at 0", cum(map[int]uint64{0: 10}), cum(nil), 0.5, ms(0) / 2},
		{"interpolated", cum(map[int]uint64{4: 100}), cum(nil), 0.5, ms(3) + (ms(4)-ms(3))*0.5},
		{"p99", cum(map[int]uint64{4: 100}), cum(nil), 0.99, ms(3) + (ms(4)-ms(3))*0.99},
		{"across buckets", cum(map[int]uint64{1: 50, 2: 50}), cum(nil), 0.75, ms(1) + (ms(2)-ms(1))*0.5},
		{"rank at a bucket's top", cum(map[int]uint64{1: 50, 2: 50}), cum(nil), 0.5, ms(1)},
		{"window only", cum(map[int]uint64{1: 50, 6: 100}), cum(map[int]uint64{1: 50}), 0.5, ms(5) + (ms(6)-ms(5))*0.5},
		{"+Inf gives the last bound", cum(map[int]uint64{12: 10}), cum(nil), 0.5, ms(11)},
		{"reset counts from 0", cum(map[int]uint64{4: 10}), cum(map[int]uint64{4: 20, 8: 5}), 0.5, ms(3) + (ms(4)-ms(3))*0.5},
	} {
		if got := windowQuantile(tc.q, &tc.now, &tc.base); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestScriptErrorRing(t *testing.T) {
	t.Parallel()
	var nilObs *Observer
	nilObs.ScriptError("/r", "cb", "", errors.New("x"), "")
	if nilObs.RecentErrors(10) != nil {
		t.Error("a nil Observer keeps errors")
	}
	env := newDash(t, newFakeDash(), Options{})
	o := env.obs
	if got := o.RecentErrors(MaxErrors); len(got) != 0 {
		t.Fatalf("%d errors before any", len(got))
	}
	for i := range maxKeptErrors + 50 {
		o.ScriptError("/r", "on_message", fmt.Sprint("c", i), fmt.Errorf("error %d", i), "")
	}
	all := o.RecentErrors(1000)
	if len(all) != maxKeptErrors {
		t.Fatalf("%d kept, want %d", len(all), maxKeptErrors)
	}
	for i, e := range all {
		if want := fmt.Sprint("error ", maxKeptErrors+50-1-i); e.Error != want {
			t.Fatalf("entry %d: %q, want %q (newest first)", i, e.Error, want)
		}
	}

	// Long texts are cut at a rune boundary.
	long := strings.Repeat("é", maxErrorText)         // 2 bytes a rune
	tb := "x" + strings.Repeat("€", maxTracebackText) // 3 bytes a rune
	o.ScriptError(strings.Repeat("r", 1000), "on_open", "", errors.New(long), tb)
	o.ScriptError("/r", "on_close", "", nil, "")
	got := o.RecentErrors(2)
	e := got[1]
	if len(e.Error) != maxErrorText || !utf8.ValidString(e.Error) {
		t.Errorf("error cut to %d bytes (valid %v), want %d", len(e.Error), utf8.ValidString(e.Error), maxErrorText)
	}
	if len(e.Traceback) > maxTracebackText || len(e.Traceback) < maxTracebackText-2 || !utf8.ValidString(e.Traceback) {
		t.Errorf("traceback cut to %d bytes (valid %v)", len(e.Traceback), utf8.ValidString(e.Traceback))
	}
	if len(e.Route) != maxLabelText {
		t.Errorf("route cut to %d bytes", len(e.Route))
	}
	if got[0].Error != "<nil>" || got[0].Callback != "on_close" {
		t.Errorf("nil error entry: %+v", got[0])
	}

	// The snapshot carries the latest MaxErrors.
	feed := openFeed(t, feedCtx(t), env.srv.URL)
	snap := feed.waitSnapshot(t, func(s *Snapshot) bool { return len(s.Errors) > 0 && s.Errors[0].Callback == "on_close" })
	if len(snap.Errors) != MaxErrors {
		t.Errorf("%d errors in the snapshot, want %d", len(snap.Errors), MaxErrors)
	}
}

// TestSamplerStops: cancelling Options.Context ends the sampler (and any
// pending nodes question) and the feeds; new feeds get 503.
func TestSamplerStops(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	src.nodesGate = make(chan struct{}) // never answers: only the context ends it
	env := newDash(t, src, Options{})
	feed := openFeed(t, feedCtx(t), env.srv.URL)
	feed.waitSnapshot(t, func(*Snapshot) bool { return src.nodesCalls.Load() >= 1 })
	env.cancel()
	select {
	case <-env.d.sampler.done:
	case <-feedCtx(t).Done():
		t.Fatal("the sampler did not stop")
	}
	for {
		if _, _, err := feed.next(); err != nil {
			break // the feed ended
		}
	}
	resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/feed", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("feed after the sampler stopped: %d, want 503", resp.StatusCode)
	}
	if n := env.d.sampler.hub.feedCount(); n != 0 {
		t.Errorf("%d feeds after the stop", n)
	}
}

// BenchmarkSample is one sampler tick with 50 routes of three callbacks.
func BenchmarkSample(b *testing.B) {
	src := newFakeDash()
	src.rstats, src.infos = nil, nil
	env := newDash(b, src, Options{SampleInterval: time.Hour})
	for i := range 50 {
		path := fmt.Sprintf("/route/%d", i)
		src.rstats = append(src.rstats, router.RouteStats{Pattern: path, Connections: 10, Handshakes: 20, MessagesIn: int64(i) * 100, MessagesOut: int64(i) * 200})
		src.infos = append(src.infos, RouteInfo{Path: path, Script: "r.lua", Version: "v1", LoadedAt: reloadAt})
		for _, cb := range []string{"on_open", "on_message", "on_close"} {
			env.obs.Callback(path, cb, time.Duration(i)*time.Microsecond, nil)
		}
	}
	s := newSampler(context.Background(), src, env.obs, time.Second, env.d.log)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now = now.Add(time.Second)
		s.tick(now)
	}
	b.StopTimer()
	s.nodesWG.Wait()
}

// TestFeedOutlivesWriteTimeout: the node may set the admin server's
// WriteTimeout; the feed extends its deadline on every write and so
// outlives it.
func TestFeedOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	h, d, err := newAdmin(newFakeDash(), reg, Options{Context: ctx, SampleInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(func() { cancel(); srv.Close(); <-d.sampler.done })

	feed := openFeed(t, feedCtx(t), srv.URL)
	first := feed.waitSnapshot(t, func(*Snapshot) bool { return true })
	// Snapshots stamped a second after the first one still arrive.
	feed.waitSnapshot(t, func(s *Snapshot) bool { return s.At > first.At+1000 })

	// HEAD answers the headers without streaming.
	resp, _ := doReq(t, http.MethodHead, srv.URL+"/dashboard/feed", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD feed: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestHandlerTotalsMatchHistogram: the Observer's own bucket counts, which
// the sampler reads, equal the Prometheus histogram's, bounds included.
func TestHandlerTotalsMatchHistogram(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	o, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	var ds []time.Duration
	for _, b := range handlerBucketBounds {
		sec := time.Duration(b * float64(time.Second))
		ds = append(ds, sec, sec-1, sec+1)
	}
	ds = append(ds, 0, 10*time.Second)
	for _, d := range ds {
		o.Callback("/r", "on_message", d, nil)
		o.Callback("/r", "on_open", d/2, nil)
	}
	got := map[string]*handlerTotals{}
	o.handlerTotals(got)
	var want [len(handlerBucketBounds) + 1]uint64
	for _, m := range gatherFamily(t, reg, "moonwire_handler_duration_seconds") {
		for i, b := range m.GetHistogram().GetBucket() {
			want[i] += b.GetCumulativeCount()
		}
		want[len(handlerBucketBounds)] += m.GetHistogram().GetSampleCount()
	}
	if got["/r"] == nil || got["/r"].buckets != want {
		t.Errorf("buckets %v, histogram %v", got["/r"], want)
	}
}

func gatherFamily(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	t.Fatalf("no %s", name)
	return nil
}
