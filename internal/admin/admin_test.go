package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/moonwire/moonwire/router"
)

// fakeSource is a Source whose answers the test sets.
type fakeSource struct {
	mu       sync.Mutex
	stats    router.Stats
	rstats   []router.RouteStats
	routes   []Route
	reload   ReloadState
	draining bool
}

func (f *fakeSource) Stats() router.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stats
	st.HandshakesRefused = maps.Clone(st.HandshakesRefused)
	st.Closes = maps.Clone(st.Closes)
	return st
}

func (f *fakeSource) RouteStats() []router.RouteStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rstats)
}

func (f *fakeSource) Routes() []Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.routes)
}

func (f *fakeSource) Reload() ReloadState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reload
}

func (f *fakeSource) Draining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

var reloadAt = time.Date(2026, 3, 1, 12, 30, 15, 500_000_000, time.UTC)

func busySource() *fakeSource {
	return &fakeSource{
		stats: router.Stats{
			Connections:       7,
			Broadcasts:        11,
			Fanout:            220,
			QueueDrops:        3,
			SlowCloses:        2,
			ProtocolErrors:    5,
			BrokerErrors:      1,
			HandshakesOK:      40,
			HandshakesRefused: map[int]int64{401: 9, 429: 4},
			Closes:            map[int]int64{1000: 30, 1001: 6, 1008: 2},
			Uptime:            90*time.Second + 500*time.Millisecond,
		},
		rstats: []router.RouteStats{
			{Pattern: "/echo", Connections: 2, Handshakes: 10, MessagesIn: 100, MessagesOut: 100, BytesIn: 1500, BytesOut: 1300},
			{Pattern: "/chat/{room}", Connections: 4, Handshakes: 25, MessagesIn: 50, MessagesOut: 500, BytesIn: 900, BytesOut: 9000},
			// The previous /echo, still draining after a reload.
			{Pattern: "/echo", Connections: 1, Handshakes: 5, MessagesIn: 7, MessagesOut: 8, BytesIn: 90, BytesOut: 80},
		},
		routes: []Route{
			{Path: "/echo", Script: "echo.lua", Version: "v2", Connections: 2},
			{Path: "/chat/{room}", Script: "chat.lua", Version: "v1", Connections: 4},
		},
		reload: ReloadState{Reloads: 3, Failures: 2, At: reloadAt, OK: true},
	}
}

func newServer(t testing.TB, src Source) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	h, err := New(src, reg, Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, reg
}

func get(t testing.TB, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// scrape fetches /metrics and parses the text exposition.
func scrape(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := get(t, http.MethodGet, base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s: %s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return mfs
}

// series is one expected sample: labels (name=value pairs) and value.
type series struct {
	labels map[string]string
	value  float64
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func valueOf(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// checkFamily asserts that family name exists with type typ, exactly the
// label names labels on every series, and exactly the series want.
func checkFamily(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels []string, want []series) {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Errorf("%s: missing", name)
		return
	}
	if mf.GetType() != typ {
		t.Errorf("%s: type %v, want %v", name, mf.GetType(), typ)
	}
	if mf.GetHelp() == "" {
		t.Errorf("%s: no help", name)
	}
	got := map[string]float64{}
	for _, m := range mf.GetMetric() {
		ls := labelsOf(m)
		names := make([]string, 0, len(ls))
		for k := range ls {
			names = append(names, k)
		}
		slices.Sort(names)
		if !slices.Equal(names, labels) {
			t.Errorf("%s: labels %v, want %v", name, names, labels)
		}
		key := labelKey(ls)
		if _, dup := got[key]; dup {
			t.Errorf("%s: duplicate series %s", name, key)
		}
		got[key] = valueOf(typ, m)
	}
	wantm := map[string]float64{}
	for _, s := range want {
		wantm[labelKey(s.labels)] = s.value
	}
	if !reflect.DeepEqual(got, wantm) {
		t.Errorf("%s: series\n got %v\nwant %v", name, got, wantm)
	}
}

func labelKey(ls map[string]string) string {
	keys := make([]string, 0, len(ls))
	for k := range ls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(k + "=" + ls[k])
	}
	b.WriteString("}")
	return b.String()
}

func route(r string, v float64) series { return series{map[string]string{"route": r}, v} }
func one(v float64) []series           { return []series{{map[string]string{}, v}} }

func TestMetrics(t *testing.T) {
	t.Parallel()
	const (
		counter = dto.MetricType_COUNTER
		gauge   = dto.MetricType_GAUGE
	)
	type family struct {
		name   string
		typ    dto.MetricType
		labels []string
		want   []series
	}
	tests := []struct {
		name     string
		src      *fakeSource
		families []family
		absent   []string // families that must not appear
	}{
		{
			name: "busy, with a drained duplicate path",
			src:  busySource(),
			families: []family{
				// /echo sums the serving and the draining entry.
				{"moonwire_connections", gauge, []string{"route"}, []series{route("/echo", 3), route("/chat/{room}", 4)}},
				{"moonwire_handshakes_accepted_total", counter, []string{"route"}, []series{route("/echo", 15), route("/chat/{room}", 25)}},
				{"moonwire_handshakes_refused_total", counter, []string{"status"}, []series{
					{map[string]string{"status": "401"}, 9}, {map[string]string{"status": "429"}, 4}}},
				{"moonwire_messages_received_total", counter, []string{"route"}, []series{route("/echo", 107), route("/chat/{room}", 50)}},
				{"moonwire_messages_sent_total", counter, []string{"route"}, []series{route("/echo", 108), route("/chat/{room}", 500)}},
				{"moonwire_received_bytes_total", counter, []string{"route"}, []series{route("/echo", 1590), route("/chat/{room}", 900)}},
				{"moonwire_sent_bytes_total", counter, []string{"route"}, []series{route("/echo", 1380), route("/chat/{room}", 9000)}},
				{"moonwire_broadcasts_total", counter, nil, one(11)},
				{"moonwire_broadcast_deliveries_total", counter, nil, one(220)},
				{"moonwire_queue_drops_total", counter, nil, one(3)},
				{"moonwire_slow_consumer_closes_total", counter, nil, one(2)},
				{"moonwire_protocol_errors_total", counter, nil, one(5)},
				{"moonwire_broker_errors_total", counter, nil, one(1)},
				{"moonwire_closes_total", counter, []string{"code"}, []series{
					{map[string]string{"code": "1000"}, 30}, {map[string]string{"code": "1001"}, 6}, {map[string]string{"code": "1008"}, 2}}},
				{"moonwire_uptime_seconds", gauge, nil, one(90.5)},
				{"moonwire_reloads_total", counter, []string{"result"}, []series{
					{map[string]string{"result": "ok"}, 3}, {map[string]string{"result": "failed"}, 2}}},
				{"moonwire_reload_last_success", gauge, nil, one(1)},
				{"moonwire_reload_last_timestamp_seconds", gauge, nil, one(float64(reloadAt.Unix()) + 0.5)},
			},
		},
		{
			name: "fresh: no routes, no traffic, no reload",
			// The node's zero ReloadState has OK false: before any reload
			// the last-success gauge is 1 all the same.
			src: &fakeSource{},
			families: []family{
				{"moonwire_broadcasts_total", counter, nil, one(0)},
				{"moonwire_broadcast_deliveries_total", counter, nil, one(0)},
				{"moonwire_queue_drops_total", counter, nil, one(0)},
				{"moonwire_slow_consumer_closes_total", counter, nil, one(0)},
				{"moonwire_protocol_errors_total", counter, nil, one(0)},
				{"moonwire_broker_errors_total", counter, nil, one(0)},
				{"moonwire_uptime_seconds", gauge, nil, one(0)},
				{"moonwire_reloads_total", counter, []string{"result"}, []series{
					{map[string]string{"result": "ok"}, 0}, {map[string]string{"result": "failed"}, 0}}},
				{"moonwire_reload_last_success", gauge, nil, one(1)},
				{"moonwire_reload_last_timestamp_seconds", gauge, nil, one(0)},
			},
			absent: []string{
				"moonwire_connections", "moonwire_handshakes_accepted_total",
				"moonwire_handshakes_refused_total", "moonwire_closes_total",
				"moonwire_messages_received_total",
			},
		},
		{
			name: "last reload failed",
			src: &fakeSource{reload: ReloadState{
				Reloads: 1, Failures: 4, At: reloadAt, OK: false, Err: "room.lua:5: syntax error near 'end'",
			}},
			families: []family{
				{"moonwire_reloads_total", counter, []string{"result"}, []series{
					{map[string]string{"result": "ok"}, 1}, {map[string]string{"result": "failed"}, 4}}},
				{"moonwire_reload_last_success", gauge, nil, one(0)},
				{"moonwire_reload_last_timestamp_seconds", gauge, nil, one(float64(reloadAt.Unix()) + 0.5)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, tt.src)
			mfs := scrape(t, srv.URL)
			for _, f := range tt.families {
				checkFamily(t, mfs, f.name, f.typ, f.labels, f.want)
			}
			for _, name := range tt.absent {
				if _, ok := mfs[name]; ok {
					t.Errorf("%s: present, want absent", name)
				}
			}
			// The runtime and process collectors are registered too.
			for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
				if _, ok := mfs[name]; !ok {
					t.Errorf("%s: missing", name)
				}
			}
		})
	}
}

// TestMetricsReadAtScrapeTime: the collector holds no state; every scrape
// reads the Source afresh, including the drop of a drained duplicate.
func TestMetricsReadAtScrapeTime(t *testing.T) {
	t.Parallel()
	src := busySource()
	srv, _ := newServer(t, src)
	checkFamily(t, scrape(t, srv.URL), "moonwire_messages_received_total", dto.MetricType_COUNTER,
		[]string{"route"}, []series{route("/echo", 107), route("/chat/{room}", 50)})

	src.mu.Lock()
	src.rstats = src.rstats[:2] // the old /echo finished draining
	src.rstats[1].MessagesIn += 10
	src.stats.Closes[1001]++
	src.mu.Unlock()

	mfs := scrape(t, srv.URL)
	// Documented: the summed counter goes down when the old entry goes.
	checkFamily(t, mfs, "moonwire_messages_received_total", dto.MetricType_COUNTER,
		[]string{"route"}, []series{route("/echo", 100), route("/chat/{room}", 60)})
	checkFamily(t, mfs, "moonwire_closes_total", dto.MetricType_COUNTER, []string{"code"}, []series{
		{map[string]string{"code": "1000"}, 30}, {map[string]string{"code": "1001"}, 7}, {map[string]string{"code": "1008"}, 2}})
}

// TestSumByPatternCoversEveryField guards the summing against a field
// added to router.RouteStats and forgotten here.
func TestSumByPatternCoversEveryField(t *testing.T) {
	t.Parallel()
	var a, b router.RouteStats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := range va.NumField() {
		switch va.Field(i).Kind() {
		case reflect.String:
			va.Field(i).SetString("/x")
			vb.Field(i).SetString("/x")
		case reflect.Int64:
			va.Field(i).SetInt(int64(i + 1))
			vb.Field(i).SetInt(int64(100 * (i + 1)))
		default:
			t.Fatalf("router.RouteStats.%s: unexpected kind %v; teach sumByPattern about it", va.Type().Field(i).Name, va.Field(i).Kind())
		}
	}
	got := sumByPattern([]router.RouteStats{a, b})
	if len(got) != 1 {
		t.Fatalf("got %d entries, want 1", len(got))
	}
	vg := reflect.ValueOf(got[0])
	for i := range vg.NumField() {
		if vg.Field(i).Kind() == reflect.Int64 {
			if want := int64(101 * (i + 1)); vg.Field(i).Int() != want {
				t.Errorf("%s = %d, want %d (not summed)", vg.Type().Field(i).Name, vg.Field(i).Int(), want)
			}
		}
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		src    *fakeSource
		status int
		want   string // the JSON body
	}{
		{
			name:   "ok before any reload",
			src:    &fakeSource{},
			status: http.StatusOK,
			want:   `{"status":"ok","reload":{"reloads":0,"failures":0,"ok":true}}`,
		},
		{
			name:   "ok after reloads",
			src:    &fakeSource{reload: ReloadState{Reloads: 3, Failures: 1, At: reloadAt, OK: true}},
			status: http.StatusOK,
			want:   `{"status":"ok","reload":{"reloads":3,"failures":1,"at":"2026-03-01T12:30:15.5Z","ok":true}}`,
		},
		{
			// The previous version keeps serving: still 200.
			name: "failed reload",
			src: &fakeSource{reload: ReloadState{
				Reloads: 3, Failures: 2, At: reloadAt, OK: false, Err: "room.lua:5: syntax error near 'end'",
			}},
			status: http.StatusOK,
			want:   `{"status":"degraded","reload":{"reloads":3,"failures":2,"at":"2026-03-01T12:30:15.5Z","ok":false,"error":"room.lua:5: syntax error near 'end'"}}`,
		},
		{
			name:   "draining",
			src:    &fakeSource{draining: true, reload: ReloadState{Reloads: 1, At: reloadAt, OK: true}},
			status: http.StatusServiceUnavailable,
			want:   `{"status":"draining"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, tt.src)
			resp, body := get(t, http.MethodGet, srv.URL+"/healthz")
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := strings.TrimSpace(string(body)); got != tt.want {
				t.Errorf("body\n got %s\nwant %s", got, tt.want)
			}

			resp, body = get(t, http.MethodHead, srv.URL+"/healthz")
			if resp.StatusCode != tt.status {
				t.Errorf("HEAD: status %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("HEAD: Content-Type %q", ct)
			}
			if len(body) != 0 {
				t.Errorf("HEAD: body %q", body)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  *fakeSource
		want string
	}{
		{"two routes", busySource(), `[{"path":"/echo","script":"echo.lua","version":"v2","connections":2},{"path":"/chat/{room}","script":"chat.lua","version":"v1","connections":4}]`},
		{"none", &fakeSource{}, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, tt.src)
			resp, body := get(t, http.MethodGet, srv.URL+"/routes")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s", resp.Status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := strings.TrimSpace(string(body)); got != tt.want {
				t.Errorf("body\n got %s\nwant %s", got, tt.want)
			}
			var routes []Route
			if err := json.Unmarshal(body, &routes); err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if want := tt.src.Routes(); len(want) > 0 && !reflect.DeepEqual(routes, want) {
				t.Errorf("round trip: got %+v, want %+v", routes, want)
			}
		})
	}
}

func TestMethodsAndPaths(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, busySource())
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodHead, "/metrics", http.StatusOK},
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodHead, "/healthz", http.StatusOK},
		{http.MethodGet, "/routes", http.StatusOK},
		{http.MethodHead, "/routes", http.StatusOK},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPut, "/healthz", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/routes", http.StatusMethodNotAllowed},
		{http.MethodPatch, "/routes", http.StatusMethodNotAllowed},
		{http.MethodOptions, "/healthz", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/metrics/extra", http.StatusNotFound},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
		{http.MethodPost, "/nowhere", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp, _ := get(t, tt.method, srv.URL+tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == http.StatusMethodNotAllowed {
				if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "HEAD") {
					t.Errorf("Allow %q, want GET and HEAD", allow)
				}
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	isAlreadyRegistered := func(err error) bool {
		_, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		return ok
	}
	tests := []struct {
		name    string
		run     func() error
		wantErr func(error) bool // nil: want no error
	}{
		{"nil source", func() error { _, err := New(nil, prometheus.NewRegistry(), Options{}); return err }, func(err error) bool { return err != nil }},
		{"nil registry", func() error { _, err := New(&fakeSource{}, nil, Options{}); return err }, func(err error) bool { return err != nil }},
		{"twice on one registry", func() error {
			reg := prometheus.NewRegistry()
			if _, err := New(&fakeSource{}, reg, Options{}); err != nil {
				return err
			}
			_, err := New(&fakeSource{}, reg, Options{})
			return err
		}, isAlreadyRegistered},
		{"registry already holding the runtime collectors", func() error {
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			_, err := New(&fakeSource{}, reg, Options{})
			return err
		}, nil},
		{"observer on the same registry", func() error {
			reg := prometheus.NewRegistry()
			if _, err := New(&fakeSource{}, reg, Options{}); err != nil {
				return err
			}
			_, err := NewObserver(reg)
			return err
		}, nil},
		{"observer twice on one registry", func() error {
			reg := prometheus.NewRegistry()
			if _, err := NewObserver(reg); err != nil {
				return err
			}
			_, err := NewObserver(reg)
			return err
		}, isAlreadyRegistered},
		{"observer nil registerer", func() error { _, err := NewObserver(nil); return err }, func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.run()
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != nil && !tt.wantErr(err):
				t.Fatalf("error %v: not the one wanted", err)
			}
		})
	}
}

// TestConcurrentScrapes runs scrapes, health checks and callbacks at once,
// for the race detector.
func TestConcurrentScrapes(t *testing.T) {
	t.Parallel()
	src := busySource()
	reg := prometheus.NewPedanticRegistry()
	h, err := New(src, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				switch (i + j) % 4 {
				case 0, 1:
					path := [2]string{"/metrics", "/healthz"}[(i+j)%4]
					resp, err := http.Get(srv.URL + path)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s: %s", path, resp.Status)
					}
				case 2:
					src.mu.Lock()
					src.rstats[0].MessagesIn++
					src.stats.Closes[1000]++
					src.mu.Unlock()
				case 3:
					obs.Callback("/r"+string(rune('a'+j%5)), "on_message", time.Millisecond, nil)
				}
			}
		})
	}
	wg.Wait()
}

// TestPprof: the profiler is there with Options.Pprof and only then.
func TestPprof(t *testing.T) {
	t.Parallel()
	off, _ := newServer(t, busySource())
	if resp, _ := get(t, http.MethodGet, off.URL+"/debug/pprof/heap"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("without pprof: GET /debug/pprof/heap = %d, want 404", resp.StatusCode)
	}

	h, err := New(busySource(), prometheus.NewPedanticRegistry(), Options{Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	on := httptest.NewServer(h)
	t.Cleanup(on.Close)
	for path, want := range map[string]string{
		"/debug/pprof/":                   "goroutine",
		"/debug/pprof/heap?debug=1":       "heap profile",
		"/debug/pprof/goroutine?debug=1":  "goroutine profile",
		"/debug/pprof/cmdline":            "",
		"/debug/pprof/symbol":             "num_symbols",
		"/debug/pprof/profile?seconds=1":  "",
		"/debug/pprof/trace?seconds=0.01": "",
	} {
		resp, body := get(t, http.MethodGet, on.URL+path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %.80q, want 200 with %q", path, resp.StatusCode, body, want)
		}
	}
	if resp, _ := get(t, http.MethodGet, on.URL+"/metrics"); resp.StatusCode != http.StatusOK {
		t.Errorf("with pprof: GET /metrics = %d", resp.StatusCode)
	}
}

// TestToken: with a token, every admin path needs "Authorization: Bearer
// TOKEN"; without it, or with another, 401.
func TestToken(t *testing.T) {
	t.Parallel()
	h, err := New(&fakeSource{}, prometheus.NewPedanticRegistry(), Options{Token: "s3cret", Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/metrics", "/healthz", "/routes", "/debug/pprof/"} {
		for _, tc := range []struct {
			auth   string
			status int
		}{
			{"", http.StatusUnauthorized},
			{"Bearer wrong", http.StatusUnauthorized},
			{"Bearer s3cret2", http.StatusUnauthorized},
			{"s3cret", http.StatusUnauthorized},
			{"Basic s3cret", http.StatusUnauthorized},
			{"Bearers3cret", http.StatusUnauthorized},
			{"Bearer ", http.StatusUnauthorized},
			{"Bearer s3cret", http.StatusOK},
			// Auth schemes are case-insensitive (RFC 9110 11.1, RFC 6750).
			{"bearer s3cret", http.StatusOK},
			{"BEARER s3cret", http.StatusOK},
			{"Bearer  s3cret", http.StatusOK},
		} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s with %q: %d, want %d", path, tc.auth, resp.StatusCode, tc.status)
			}
		}
	}
}

// TestTokenCompareHidesLength: the credentials are compared as digests of
// one size, whatever their length: subtle.ConstantTimeCompare on the raw
// values returns at once when the lengths differ, which tells a client
// how long the token is.
func TestTokenCompareHidesLength(t *testing.T) { // not parallel: swaps constantTimeCompare
	var lens [][2]int
	defer func(f func(x, y []byte) int) { constantTimeCompare = f }(constantTimeCompare)
	constantTimeCompare = func(x, y []byte) int {
		lens = append(lens, [2]int{len(x), len(y)})
		return subtle.ConstantTimeCompare(x, y)
	}
	want := sha256.Sum256([]byte("s3cret"))
	for _, auth := range []string{"", "Bearer s", "Bearer s3cret", "Bearer " + strings.Repeat("x", 100), "Basic s3cret", "bearer s3cret"} {
		lens = lens[:0]
		got := bearerMatches(auth, want)
		if wantOK := strings.EqualFold(auth, "Bearer s3cret"); got != wantOK {
			t.Errorf("bearerMatches(%q) = %v, want %v", auth, got, wantOK)
		}
		if len(lens) != 1 || lens[0] != [2]int{sha256.Size, sha256.Size} {
			t.Errorf("%q: compared lengths %v, want one compare of two %d-byte digests", auth, lens, sha256.Size)
		}
	}
}
