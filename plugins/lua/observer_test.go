package lua

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// plainObserver is an Observer that does not hand out recorders: the
// engine calls Callback for every run.
type plainObserver struct {
	mu    sync.Mutex
	calls []string // "route callback ok|error"
}

func (o *plainObserver) Callback(route, callback string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, route+" "+callback+" "+outcome(err))
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// recObserver hands out recorders and counts how often it is asked.
type recObserver struct {
	plainObserver
	asked []string
}

func (o *recObserver) Recorder(route, callback string) CallbackRecorder {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.asked = append(o.asked, route+" "+callback)
	return recorderFunc(func(_ time.Duration, err error) {
		o.Callback(route, callback, 0, err)
	})
}

type recorderFunc func(time.Duration, error)

func (f recorderFunc) Record(d time.Duration, err error) { f(d, err) }

// runCallbacks makes the route's lane-0 VM run its script's ok() three
// times as "timer" and fail() once as "on_message".
func runCallbacks(t *testing.T, obs Observer) {
	t.Helper()
	s := serve(t, `
local M = {}
function M.ok() end
function M.fail() error("boom") end
return M`, Options{Observer: obs}, nil)
	s.onLane(t, func(v *vm) {
		for range 3 {
			v.L.Push(v.mod.RawGetString("ok"))
			if err := v.call("timer", 0, 0); err != nil {
				t.Errorf("ok(): %v", err)
			}
		}
		v.L.Push(v.mod.RawGetString("fail"))
		if err := v.call("on_message", 0, 0); err == nil {
			t.Error("fail(): no error")
		}
	})
}

// TestObserverHearsEveryCallback: an Observer hears each callback run
// with its route and outcome, whether it hands out recorders (asked once
// per callback kind and VM) or not.
func TestObserverHearsEveryCallback(t *testing.T) {
	t.Parallel()
	want := "/t timer ok,/t timer ok,/t timer ok,/t on_message error"
	plain, rec := &plainObserver{}, &recObserver{}
	for _, tc := range []struct {
		name  string
		obs   Observer
		calls *plainObserver
		asked string // the recorders asked for, "" when none are
	}{
		{"Callback", plain, plain, ""},
		{"Recorder", rec, &rec.plainObserver, "/t timer,/t on_message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runCallbacks(t, tc.obs)
			tc.calls.mu.Lock()
			defer tc.calls.mu.Unlock()
			if got := strings.Join(tc.calls.calls, ","); got != want {
				t.Errorf("calls %q, want %q", got, want)
			}
			// tc.calls.mu is rec's own lock in the Recorder case.
			if tc.asked != "" {
				if got := strings.Join(rec.asked, ","); got != tc.asked {
					t.Errorf("recorders asked for %q, want one per callback kind (%q)", got, tc.asked)
				}
			}
		})
	}
}
