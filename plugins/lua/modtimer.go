package lua

import (
	"math"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// timer is a timer.after or timer.every handle. It fires by posting to its
// VM's lane, so its callback runs in order with the lane's connection
// events and never concurrently with them.
type timer struct {
	v      *vm
	fn     *glua.LFunction
	every  time.Duration // 0 for a one-shot timer
	t      *time.Timer
	ud     *glua.LUserData
	active bool
}

const timerType = "moonwire.timer"

func (v *vm) openTimer(L *glua.LState) int {
	mt := L.NewTypeMetatable(timerType)
	mt.RawSetString("__index", L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"cancel": func(L *glua.LState) int {
			t := checkTimer(L, 1)
			L.Push(glua.LBool(t.active))
			t.stop()
			return 1
		},
	}))
	mod := L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"after": func(L *glua.LState) int { return v.newTimer(L, false) },
		"every": func(L *glua.LState) int { return v.newTimer(L, true) },
	})
	L.Push(mod)
	return 1
}

func checkTimer(L *glua.LState, n int) *timer {
	if ud, ok := L.Get(n).(*glua.LUserData); ok {
		if t, ok := ud.Value.(*timer); ok {
			return t
		}
	}
	L.ArgError(n, "timer expected")
	return nil
}

func (v *vm) newTimer(L *glua.LState, repeat bool) int {
	secs := float64(L.CheckNumber(1))
	fn := L.CheckFunction(2)
	if math.IsNaN(secs) || secs < 0 || secs > 365*24*3600 {
		L.ArgError(1, "seconds must be between 0 and one year")
	}
	if repeat && secs < 0.001 {
		L.ArgError(1, "timer.every needs at least 0.001 seconds")
	}
	if v.route.rt == nil {
		L.RaiseError("timers cannot start while the script loads; start them in on_start or another callback")
	}
	if len(v.timers) >= v.eng.maxTmr {
		L.RaiseError("too many timers (limit %d)", v.eng.maxTmr)
	}
	d := time.Duration(secs * float64(time.Second))
	t := &timer{v: v, fn: fn, active: true}
	if repeat {
		t.every = d
	}
	t.ud = L.NewUserData()
	t.ud.Value = t
	L.SetMetatable(t.ud, L.GetTypeMetatable(timerType))
	v.timers[t] = struct{}{}
	t.t = time.AfterFunc(d, t.post)
	L.Push(t.ud)
	return 1
}

// post runs on the timer goroutine: it hands the firing to the lane.
func (t *timer) post() {
	if rt := t.v.route.rt; rt == nil || !rt.Post(t.v.lane, t.fire) {
		return
	}
}

// fire runs on the lane.
func (t *timer) fire() {
	v := t.v
	if !t.active || v.closed {
		return
	}
	if t.every == 0 {
		t.active = false
		delete(v.timers, t)
	}
	v.L.Push(t.fn)
	if err := v.call("timer", 0, 0); err != nil {
		v.fail("timer", err)
	}
	if t.active && t.every > 0 && !v.closed {
		// Rescheduled after the callback, so a slow callback never piles
		// up firings.
		t.t.Reset(t.every)
	}
}

// stop cancels the timer. It runs on the lane.
func (t *timer) stop() {
	if !t.active {
		return
	}
	t.active = false
	t.t.Stop()
	delete(t.v.timers, t)
}
