package lua

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// These tests run timers on a fakeClock, so that which timers share a
// batch is decided by the test, not by the machine's load.

const ms = time.Millisecond

// callMod calls the script's module function name on the lane and returns
// its result as a string.
func (s *served) callMod(tb testing.TB, name string, args ...glua.LValue) string {
	tb.Helper()
	var out string
	s.onLane(tb, func(v *vm) {
		v.L.Push(v.mod.RawGetString(name))
		for _, a := range args {
			v.L.Push(a)
		}
		if err := v.pcall(len(args), 1); err != nil {
			tb.Errorf("%s: %v", name, err)
			return
		}
		out = v.L.Get(-1).String()
		v.L.Pop(1)
	})
	return out
}

// alarms checks how many alarms the VM made and when the set ones ring.
func alarms(tb testing.TB, c *fakeClock, made int, set ...time.Duration) {
	tb.Helper()
	gotMade, gotSet := c.state()
	if gotMade != made || !slices.Equal(gotSet, set) {
		tb.Fatalf("alarms: %d made, set for %v; want %d, set for %v", gotMade, gotSet, made, set)
	}
}

func TestTimersDueTogetherRunInOneBatchInDeadlineOrder(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { seen = {} }
local function rec(name) return function() table.insert(M.seen, name) end end
function M.on_start()
  timer.after(0.03, rec("c"))
  timer.after(0.01, rec("a1"))
  timer.after(0.02, rec("b"))
  timer.after(0.01, rec("a2")) -- same deadline as a1: started later, runs later
  timer.every(0.015, rec("e"))
end
return M
`, Options{}, c)
	s.onLane(t, func(*vm) {}) // on_start has run
	// Five timers, one Go timer, set for the earliest.
	alarms(t, c, 1, 10*ms)

	c.advance(30 * ms) // one ring: one batch runs all five
	if got := s.seen(t); got != "a1,a2,e,b,c" {
		t.Fatalf("ran %s", got)
	}
	// every is rescheduled a period after its batch (at 30ms) began.
	alarms(t, c, 1, 45*ms)
	c.advance(14 * ms)
	c.advance(1 * ms)
	if got := s.seen(t); got != "a1,a2,e,b,c,e" {
		t.Fatalf("ran %s", got)
	}
	alarms(t, c, 1, 60*ms)
}

func TestTimerStartedInABatchRunsInALaterOne(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { seen = {} }
local function rec(name) table.insert(M.seen, name) end
function M.on_start()
  timer.after(0.01, function()
    rec("a")
    -- Due at once (the clock stands still), yet not in this batch.
    timer.after(0, function() rec("z") end)
  end)
  timer.after(0.01, function() rec("b") end)
end
return M
`, Options{}, c)
	s.onLane(t, func(*vm) {})
	between := make(chan string, 1)
	s.onLane(t, func(v *vm) {
		// Rung from the lane, the batch queues behind this task, and the
		// check below queues behind the batch but ahead of anything the
		// batch posts.
		c.advance(10 * ms)
		s.rt.Post(0, func() {
			var seen []string
			if t, ok := v.mod.RawGetString("seen").(*glua.LTable); ok {
				for i := 1; i <= t.Len(); i++ {
					seen = append(seen, t.RawGetInt(i).String())
				}
			}
			between <- strings.Join(seen, ",")
		})
	})
	select {
	case got := <-between:
		if got != "a,b" {
			t.Fatalf("after the first batch: %q, want a,b", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the check did not run")
	}
	waitFor(t, "z", func() bool { return s.seen(t) == "a,b,z" })
}

func TestAfterZeroChainLeavesTheLaneFree(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { n = 0, stop = false }
local function step()
  M.n = M.n + 1
  -- 100000 steps: a safety net, so that a batch running the whole chain
  -- fails the test instead of hanging it.
  if not M.stop and M.n < 100000 then timer.after(0, step) end
end
function M.on_start() timer.after(0, step) end
function M.halt() M.stop = true return M.n end
return M
`, Options{}, c)
	// The chain restarts itself in every batch and the clock stands still,
	// so it is always due. A lane task that posts itself again each time
	// it runs alternates with the chain's batches: it must see the chain
	// advance by one step at a time, not run whole in one batch.
	var seen []int
	done := make(chan struct{})
	var look func()
	look = func() {
		seen = append(seen, int(s.route.vms[0].mod.RawGetString("n").(glua.LNumber)))
		if len(seen) == 50 {
			close(done)
			return
		}
		s.rt.Post(0, look)
	}
	s.rt.Post(0, look)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the lane task did not get its turns")
	}
	for i := 1; i < len(seen); i++ {
		if seen[i]-seen[i-1] > 1 {
			t.Fatalf("the chain ran %d steps between two lane tasks: %v", seen[i]-seen[i-1], seen)
		}
	}
	if seen[len(seen)-1]-seen[0] < 40 {
		t.Fatalf("the chain hardly ran: %v", seen)
	}
	s.callMod(t, "halt")
	waitFor(t, "the chain to stop", func() bool {
		var empty bool
		s.onLane(t, func(v *vm) { empty = v.timers.live == 0 && len(v.timers.heap) == 0 })
		return empty
	})
	// Due timers go straight to the lane: the chain made no Go timer.
	alarms(t, c, 0)
}

func TestEveryReschedulesAfterItsCallbackWithoutPilingUp(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { seen = {} }
function M.on_start()
  local n = 0
  timer.every(0.02, function()
    n = n + 1
    table.insert(M.seen, tostring(n))
    if n == 1 then probe.advance(0.05) end -- a run that takes 50ms
  end)
end
return M
`, Options{}, c)
	s.onLane(t, func(*vm) {})
	c.advance(20 * ms)
	// The first run ended at 70ms, past its next deadline (40ms): the
	// timer runs once more at once, not once per missed period.
	waitFor(t, "the second run", func() bool { return s.seen(t) == "1,2" })
	// The second run began at 70ms; the third is due a period later.
	s.onLane(t, func(v *vm) {
		q := &v.timers
		if len(q.heap) != 1 || q.heap[0].when != 90*ms || !q.armed || q.armedFor != 90*ms {
			t.Errorf("heap %d, next %v, armed %v for %v", len(q.heap), q.heap[0].when, q.armed, q.armedFor)
		}
	})
	alarms(t, c, 1, 90*ms)
	if got := s.seen(t); got != "1,2" {
		t.Fatalf("ran %s", got)
	}
}

func TestTimerCancel(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { seen = {} }
local function rec(s) table.insert(M.seen, s) end
function M.on_start()
  local b
  -- a and b are due in the same batch; a runs first and cancels b.
  timer.after(0.01, function() rec("a:" .. tostring(b:cancel()) .. "," .. tostring(b:cancel())) end)
  b = timer.after(0.01, function() rec("b") end)
  local n, e = 0, nil
  e = timer.every(0.01, function()
    n = n + 1
    rec("e" .. n)
    if n == 2 then rec("self:" .. tostring(e:cancel())) end
  end)
  local once
  once = timer.after(0.01, function() rec("once:" .. tostring(once:cancel())) end)
  M.late = timer.after(1, function() rec("late") end)
end
function M.cancel_late() return tostring(M.late:cancel()) .. "," .. tostring(M.late:cancel()) end
return M
`, Options{}, c)
	s.onLane(t, func(*vm) {})
	c.advance(10 * ms)
	// A one-shot timer is spent by the time its callback runs.
	if got := s.seen(t); got != "a:true,false,e1,once:false" {
		t.Fatalf("first batch: %s", got)
	}
	c.advance(10 * ms)
	if got := s.seen(t); got != "a:true,false,e1,once:false,e2,self:true" {
		t.Fatalf("second batch: %s", got)
	}
	if got := s.callMod(t, "cancel_late"); got != "true,false" {
		t.Fatalf("cancel late: %s", got)
	}
	s.onLane(t, func(v *vm) {
		if v.timers.live != 0 || len(v.timers.heap) != 0 {
			t.Errorf("%d live, %d in the heap", v.timers.live, len(v.timers.heap))
		}
	})
	c.advance(time.Hour)
	if got := s.seen(t); got != "a:true,false,e1,once:false,e2,self:true" {
		t.Fatalf("a cancelled timer ran: %s", got)
	}
}

func TestTimerCancelInALoopKeepsTheHeapSmall(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = {}
local keep = {}
function M.churn(n)
  for i = 1, 10 do keep[i] = timer.every(1, function() end) end
  for i = 1, n do
    timer.after(60, function() end):cancel()
    timer.every(1, function() end):cancel()
  end
  return "ok"
end
return M
`, Options{MaxTimers: 100}, c)
	// Far more timers than the limit come and go; only the ten kept stay.
	if got := s.callMod(t, "churn", glua.LNumber(20000)); got != "ok" {
		t.Fatalf("churn: %s", got)
	}
	s.onLane(t, func(v *vm) {
		q := &v.timers
		if q.live != 10 || len(q.heap) != 10 || cap(q.heap) > 32 {
			t.Errorf("%d live, heap %d (capacity %d); want 10, 10 (capacity at most 32)", q.live, len(q.heap), cap(q.heap))
		}
	})
}

func TestTimerLimitPerVM(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
local M = { seen = {} }
local hs = {}
function M.fill()
  for i = 1, 3 do hs[i] = timer.after(0.01, function() end) end
  local ok, err = pcall(timer.every, 1, function() end)
  hs[1]:cancel()
  local ok2 = pcall(timer.after, 0.01, function()
    -- Spent before it runs, so it may start a timer at the limit.
    table.insert(M.seen, tostring(pcall(timer.after, 60, function() end)))
  end)
  return tostring(ok) .. " " .. err .. " " .. tostring(ok2)
end
return M
`, Options{MaxTimers: 3}, c)
	got := s.callMod(t, "fill")
	if !strings.HasPrefix(got, "false ") || !strings.HasSuffix(got, "too many timers (limit 3 live timers per VM): cancel the ones no longer needed true") {
		t.Fatalf("fill: %s", got)
	}
	c.advance(10 * ms)
	if got := s.seen(t); got != "true" {
		t.Fatalf("a timer at the limit could not start another: %s", got)
	}
}

func TestClosedVMRunsNoTimer(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	s := serve(t, `
return { on_start = function()
  timer.every(0.01, function() probe.hit() end)
  timer.after(0.5, function() probe.hit() end)
end }
`, Options{}, c)
	s.onLane(t, func(*vm) {})
	c.advance(10 * ms)
	waitFor(t, "a run", func() bool { return s.hits.Load() == 1 })
	alarms(t, c, 1, 20*ms)
	// What a hot reload does to the old version: its VM closes while the
	// lane goes on.
	s.onLane(t, func(v *vm) { v.close() })
	alarms(t, c, 1) // the Go timer is stopped
	c.advance(time.Hour)
	// A batch that was on its way when the VM closed runs nothing.
	s.onLane(t, func(v *vm) { v.timers.batch() })
	if n := s.hits.Load(); n != 1 {
		t.Fatalf("%d runs, want 1", n)
	}
}

// TestNoGoroutineLeftAfterStop is not parallel: it counts the process's
// goroutines.
func TestNoGoroutineLeftAfterStop(t *testing.T) {
	before := runtime.NumGoroutine()
	s := serve(t, `
return { on_start = function()
  for i = 1, 1000 do timer.every(0.01, function() probe.hit() end) end
  for i = 1, 1000 do timer.after(60, function() end) end
end }
`, Options{MaxTimers: 2000}, nil)
	waitFor(t, "the timers to run", func() bool { return s.hits.Load() >= 3000 })
	s.stop()
	waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
