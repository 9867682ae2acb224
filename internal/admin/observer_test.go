package admin

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moonwire/moonwire/plugins/lua"
)

// call is one Callback invocation.
type call struct {
	route, callback string
	d               time.Duration
	err             error
}

func TestObserver(t *testing.T) {
	t.Parallel()
	timeout := fmt.Errorf("chat.lua: on_message: %w", lua.ErrTimeout)
	scriptErr := errors.New("chat.lua:12: attempt to index a nil value")

	type hist struct {
		route, callback string
		count           uint64
		sum             float64
		// buckets: upper bound -> cumulative count, for the bounds checked.
		buckets map[float64]uint64
	}
	type errs struct {
		route, callback, kind string
		value                 float64
	}
	tests := []struct {
		name  string
		calls []call
		hists []hist
		errs  []errs
	}{
		{
			name: "successes only",
			calls: []call{
				{"/echo", "on_message", 40 * time.Microsecond, nil},
				{"/echo", "on_message", 100 * time.Microsecond, nil},
				{"/echo", "on_message", 2 * time.Millisecond, nil},
				{"/echo", "on_open", 10 * time.Microsecond, nil},
			},
			hists: []hist{
				{"/echo", "on_message", 3, 0.00214, map[float64]uint64{0.00005: 1, 0.000125: 2, 0.00078125: 2, 0.0048828125: 3}},
				{"/echo", "on_open", 1, 0.00001, map[float64]uint64{0.00005: 1}},
			},
			// Both kinds start at zero with the pair's first callback.
			errs: []errs{
				{"/echo", "on_message", "timeout", 0}, {"/echo", "on_message", "error", 0},
				{"/echo", "on_open", "timeout", 0}, {"/echo", "on_open", "error", 0},
			},
		},
		{
			name: "timeouts and errors",
			calls: []call{
				{"/chat/{room}", "on_message", 1010 * time.Millisecond, timeout},
				{"/chat/{room}", "on_message", 1500 * time.Millisecond, timeout},
				{"/chat/{room}", "on_message", time.Millisecond, scriptErr},
				{"/chat/{room}", "on_message", time.Millisecond, nil},
				{"/chat/{room}", "timer", time.Second, lua.ErrTimeout},
				{"/auth", "on_handshake", 300 * time.Microsecond, scriptErr},
			},
			hists: []hist{
				// 1.01s falls in the last bucket (~1.19s); 1.5s only in +Inf.
				{"/chat/{room}", "on_message", 4, 2.512, map[float64]uint64{0.0019531250: 2, 0.476837158203125: 2, 1.1920928955078125: 3}},
				{"/chat/{room}", "timer", 1, 1, map[float64]uint64{1.1920928955078125: 1}},
				{"/auth", "on_handshake", 1, 0.0003, map[float64]uint64{0.0003125: 1}},
			},
			errs: []errs{
				{"/chat/{room}", "on_message", "timeout", 2}, {"/chat/{room}", "on_message", "error", 1},
				{"/chat/{room}", "timer", "timeout", 1}, {"/chat/{room}", "timer", "error", 0},
				{"/auth", "on_handshake", "timeout", 0}, {"/auth", "on_handshake", "error", 1},
			},
		},
	}
	// Each case is recorded through Callback, and through Recorder as the
	// Lua engine does: a recorder asked for once per pair and kept.
	type run struct {
		name string
		tt   int
		rec  bool
	}
	var runs []run
	for i, tt := range tests {
		runs = append(runs, run{tt.name + "/Callback", i, false}, run{tt.name + "/Recorder", i, true})
	}
	for _, r := range runs {
		tt := tests[r.tt]
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewPedanticRegistry()
			o, err := NewObserver(reg)
			if err != nil {
				t.Fatal(err)
			}
			recs := map[callbackKey]lua.CallbackRecorder{}
			for _, c := range tt.calls {
				if !r.rec {
					o.Callback(c.route, c.callback, c.d, c.err)
					continue
				}
				k := callbackKey{c.route, c.callback}
				if recs[k] == nil {
					recs[k] = o.Recorder(c.route, c.callback)
				}
				recs[k].Record(c.d, c.err)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]*dto.MetricFamily{}
			for _, mf := range mfs {
				byName[mf.GetName()] = mf
			}

			hf := byName["moonwire_handler_duration_seconds"]
			if hf == nil || hf.GetType() != dto.MetricType_HISTOGRAM {
				t.Fatalf("moonwire_handler_duration_seconds: missing or not a histogram: %v", hf)
			}
			if n := len(hf.GetMetric()); n != len(tt.hists) {
				t.Errorf("histogram series: %d, want %d", n, len(tt.hists))
			}
			for _, want := range tt.hists {
				m := find(hf, map[string]string{"route": want.route, "callback": want.callback})
				if m == nil {
					t.Errorf("histogram %s %s: missing", want.route, want.callback)
					continue
				}
				h := m.GetHistogram()
				if h.GetSampleCount() != want.count {
					t.Errorf("histogram %s %s: count %d, want %d", want.route, want.callback, h.GetSampleCount(), want.count)
				}
				if math.Abs(h.GetSampleSum()-want.sum) > 1e-9 {
					t.Errorf("histogram %s %s: sum %v, want %v", want.route, want.callback, h.GetSampleSum(), want.sum)
				}
				if len(h.GetBucket()) != len(HandlerBuckets) {
					t.Errorf("histogram %s %s: %d buckets, want %d", want.route, want.callback, len(h.GetBucket()), len(HandlerBuckets))
				}
				for bound, cum := range want.buckets {
					found := false
					for _, b := range h.GetBucket() {
						if math.Abs(b.GetUpperBound()-bound) < 1e-12 {
							found = true
							if b.GetCumulativeCount() != cum {
								t.Errorf("histogram %s %s: le=%v: %d, want %d", want.route, want.callback, bound, b.GetCumulativeCount(), cum)
							}
						}
					}
					if !found {
						t.Errorf("histogram %s %s: no bucket le=%v", want.route, want.callback, bound)
					}
				}
			}

			ef := byName["moonwire_handler_errors_total"]
			if ef == nil || ef.GetType() != dto.MetricType_COUNTER {
				t.Fatalf("moonwire_handler_errors_total: missing or not a counter: %v", ef)
			}
			if n := len(ef.GetMetric()); n != len(tt.errs) {
				t.Errorf("error series: %d, want %d", n, len(tt.errs))
			}
			for _, want := range tt.errs {
				m := find(ef, map[string]string{"route": want.route, "callback": want.callback, "kind": want.kind})
				if m == nil {
					t.Errorf("errors %s %s %s: missing", want.route, want.callback, want.kind)
					continue
				}
				if v := m.GetCounter().GetValue(); v != want.value {
					t.Errorf("errors %s %s %s: %v, want %v", want.route, want.callback, want.kind, v, want.value)
				}
			}
		})
	}
}

// find returns the series of mf with exactly the labels ls.
func find(mf *dto.MetricFamily, ls map[string]string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		got := labelsOf(m)
		if len(got) != len(ls) {
			continue
		}
		match := true
		for k, v := range ls {
			if got[k] != v {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

func TestObserverEdgeCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"nil observer records nothing", func(t *testing.T) {
			var o *Observer
			o.Callback("/echo", "on_message", time.Millisecond, lua.ErrTimeout)
		}},
		{"label values that are not UTF-8 are dropped", func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			o, err := NewObserver(reg)
			if err != nil {
				t.Fatal(err)
			}
			o.Callback("/bad\xff", "on_message", time.Millisecond, nil)
			o.Callback("/ok", "on_message", time.Millisecond, nil)
			if _, err := reg.Gather(); err != nil {
				t.Fatalf("gather: %v", err)
			}
			if n := testCount(t, reg); n != 1 {
				t.Fatalf("%d histogram series, want 1", n)
			}
		}},
		{"concurrent first calls resolve one series", func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			o, err := NewObserver(reg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					for j := range 100 {
						o.Callback(fmt.Sprintf("/r%d", j%10), "on_message", time.Duration(i)*time.Microsecond, nil)
					}
				})
			}
			wg.Wait()
			if n := testCount(t, reg); n != 10 {
				t.Fatalf("%d histogram series, want 10", n)
			}
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() != "moonwire_handler_duration_seconds" {
					continue
				}
				var total uint64
				for _, m := range mf.GetMetric() {
					total += m.GetHistogram().GetSampleCount()
				}
				if total != 1600 {
					t.Fatalf("%d observations, want 1600", total)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t)
		})
	}
}

// testCount returns the number of handler duration series in reg.
func testCount(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "moonwire_handler_duration_seconds" {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// TestRecorderOfARefusedPair: a pair whose labels Prometheus refuses (not
// UTF-8) gets a recorder that records nothing, as Callback records
// nothing for it, and a nil Observer's recorder is as quiet.
func TestRecorderOfARefusedPair(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	o, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	o.Recorder("/bad\xff", "on_message").Record(time.Millisecond, errors.New("boom"))
	o.Callback("/bad\xff", "on_open", time.Millisecond, nil)
	if n := testCount(t, reg); n != 0 {
		t.Fatalf("%d duration series, want 0", n)
	}
	(*Observer)(nil).Recorder("/echo", "on_message").Record(time.Millisecond, nil)
}

// TestObserverCallbackDoesNotAllocate pins the steady state at zero
// allocations (the benchmark below reports the same figure). Not parallel:
// testing.AllocsPerRun refuses to run while parallel tests do.
func TestObserverCallbackDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	o, err := NewObserver(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	timeout := fmt.Errorf("x: %w", lua.ErrTimeout)
	failure := errors.New("boom")
	route, cb := "/chat/{room}", "on_message"
	o.Callback(route, cb, time.Millisecond, nil) // resolve once
	tests := []struct {
		name string
		err  error
	}{{"ok", nil}, {"timeout", timeout}, {"error", failure}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() {
				o.Callback(route, cb, 250*time.Microsecond, tt.err)
			}); n != 0 {
				t.Fatalf("%v allocs per Callback, want 0", n)
			}
			rec := o.Recorder(route, cb)
			if n := testing.AllocsPerRun(1000, func() {
				rec.Record(250*time.Microsecond, tt.err)
			}); n != 0 {
				t.Fatalf("%v allocs per Record, want 0", n)
			}
		})
	}
}

func BenchmarkObserverCallback(b *testing.B) {
	o, err := NewObserver(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	// A realistic cache: a few routes times the usual callbacks.
	routes := []string{"/echo", "/chat", "/chat/{room}", "/auth", "/monitor"}
	cbs := []string{"on_handshake", "on_open", "on_message", "on_close", "timer"}
	for _, r := range routes {
		for _, c := range cbs {
			o.Callback(r, c, time.Millisecond, nil)
		}
	}
	timeout := fmt.Errorf("x: %w", lua.ErrTimeout)
	benches := []struct {
		name string
		err  error
	}{{"ok", nil}, {"timeout", timeout}}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				o.Callback("/chat/{room}", "on_message", 250*time.Microsecond, bb.err)
			}
		})
	}
	b.Run("recorder", func(b *testing.B) {
		b.ReportAllocs()
		rec := o.Recorder("/chat/{room}", "on_message")
		for b.Loop() {
			rec.Record(250*time.Microsecond, nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				o.Callback(routes[i%len(routes)], cbs[i%len(cbs)], 250*time.Microsecond, nil)
				i++
			}
		})
	})
}

// TestRecordersShareTheirSeries: a pair's Recorders (one per VM, more of
// them than the series has shards) and Callback count into one
// histogram, whatever goroutines record: /metrics and the dashboard's
// totals see every run once.
func TestRecordersShareTheirSeries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	o, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	const recorders, runs = 2*seriesShards + 1, 500
	var wg sync.WaitGroup
	for range recorders {
		rec := o.Recorder("/echo", "on_message")
		wg.Go(func() {
			for range runs {
				rec.Record(100*time.Microsecond, nil)
			}
		})
	}
	wg.Go(func() {
		for range runs {
			o.Callback("/echo", "on_message", time.Millisecond, lua.ErrTimeout)
		}
	})
	wg.Wait()

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var hist *dto.Histogram
	for _, mf := range mfs {
		if mf.GetName() == "moonwire_handler_duration_seconds" {
			hist = mf.GetMetric()[0].GetHistogram()
		}
	}
	want := uint64((recorders + 1) * runs)
	if hist == nil || hist.GetSampleCount() != want {
		t.Fatalf("histogram: %v, want %d runs", hist, want)
	}
	wantSum := (recorders*runs*100*time.Microsecond + runs*time.Millisecond).Seconds()
	if math.Abs(hist.GetSampleSum()-wantSum) > 1e-9 {
		t.Errorf("sum %v, want %v", hist.GetSampleSum(), wantSum)
	}
	totals := map[string]*handlerTotals{}
	o.handlerTotals(totals)
	if got := totals["/echo"]; got == nil || got.buckets[len(handlerBucketBounds)] != want || got.timeouts != runs {
		t.Errorf("handler totals %+v, want %d runs, %d timeouts", got, want, runs)
	}
}

// BenchmarkRecorderParallel records one pair from every processor, as a
// route's lanes do: each with its own Recorder, which the series keeps
// in a shard of its own.
func BenchmarkRecorderParallel(b *testing.B) {
	o, err := NewObserver(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rec := o.Recorder("/echo", "on_message")
		for pb.Next() {
			rec.Record(3*time.Microsecond, nil)
		}
	})
}
