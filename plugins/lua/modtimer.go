package lua

import (
	"container/heap"
	"errors"
	"math"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// Script timers (timer.after, timer.every).
//
// A VM's timers wait in one min-heap ordered by deadline, and one Go timer
// (the alarm) is set for the earliest deadline. When it rings it posts one
// task to the VM's lane, which runs every due timer in deadline order (a
// batch) and sets the alarm again. A Go timer per script timer would cost
// a runtime timer and a goroutine hand-off to the lane per firing: with
// thousands of timers that work spreads over every core instead of
// staying on the lane, while a batch costs one of each however many
// timers are due.
//
// Everything here runs on the VM's lane except ring, which the alarm
// calls on a goroutine of its own and which only posts the batch.

const (
	// minEvery floors timer.every's interval: a repeating timer runs at
	// most 100 times a second. (It was 1ms before timers were batched.)
	minEvery = 10 * time.Millisecond
	// maxDelay bounds both functions' seconds.
	maxDelay = 365 * 24 * time.Hour
)

// timerClock is where script timers read the time and get their Go timer:
// the wall clock in production. It is a seam so that tests can drive
// timers from a virtual clock instead.
type timerClock struct {
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) alarm
}

// alarm is what the timers use of a *time.Timer.
type alarm interface {
	Reset(d time.Duration) bool
	Stop() bool
}

var wallClock = timerClock{
	now:       time.Now,
	afterFunc: func(d time.Duration, f func()) alarm { return time.AfterFunc(d, f) },
}

// virtualTimerClock runs timers on vc: they fire from vc.Advance.
func virtualTimerClock(vc *router.VirtualClock) timerClock {
	return timerClock{
		now:       vc.Now,
		afterFunc: func(d time.Duration, f func()) alarm { return vc.AfterFunc(d, f) },
	}
}

// timer is a timer.after or timer.every handle.
type timer struct {
	q     *timers
	fn    *glua.LFunction
	every time.Duration // 0 for a one-shot timer
	when  time.Duration // deadline, on q's clock
	// seq orders the timers by when they were (re)scheduled: it breaks
	// deadline ties first come, first served, and tells a batch which
	// timers were scheduled while it ran (and so are not its to run).
	seq    uint64
	index  int  // in q.heap; -1 while out of it (running, fired, cancelled)
	active bool // neither fired (one-shot) nor cancelled
}

// timers is one VM's timer queue.
type timers struct {
	v     *vm
	rt    *router.Route // the lane's route, known once a timer starts
	clock timerClock
	epoch time.Time // deadlines are durations since it

	heap timerHeap
	live int    // active timers: in the heap or running
	seq  uint64 // the last timer.seq given

	alarm alarm // nil until the first timer needs it
	// armed says a batch is on its way: the alarm is set for armedFor, or
	// a batch due at armedFor was posted to the lane. A timer due later
	// than that needs nothing more; the batch sets the alarm for it.
	armed    bool
	armedFor time.Duration
	inBatch  bool // a batch is running; it arms when it ends
	closed   bool

	// Method values made once, not per alarm or post.
	ringFn, batchFn func()
}

func (q *timers) init(v *vm) {
	q.v = v
	q.clock = v.eng.timerClock
	q.epoch = q.clock.now()
	q.ringFn, q.batchFn = q.ring, q.batch
}

func (q *timers) now() time.Duration { return q.clock.now().Sub(q.epoch) }

const timerType = "moonwire.timer"

func (v *vm) openTimer(L *glua.LState) int {
	mt := L.NewTypeMetatable(timerType)
	mt.RawSetString("__index", L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"cancel": func(L *glua.LState) int {
			t := checkTimer(L, 1)
			L.Push(glua.LBool(t.active))
			t.q.cancel(t)
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
	if math.IsNaN(secs) || secs < 0 || secs > maxDelay.Seconds() {
		L.ArgError(1, "seconds must be between 0 and one year")
	}
	if repeat && secs < minEvery.Seconds() {
		L.ArgError(1, "timer.every needs at least 0.01 seconds")
	}
	if v.route.rt == nil {
		L.RaiseError("timers cannot start while the script loads; start them in on_start or another callback")
	}
	q := &v.timers
	if q.live >= v.eng.maxTmr {
		L.RaiseError("too many timers (limit %d live timers per VM): cancel the ones no longer needed", v.eng.maxTmr)
	}
	if q.rt == nil {
		q.rt = v.route.rt // once, before the alarm exists: ring reads it
		// A server on a virtual clock (`moonwire test`) runs the timers on
		// it. No timer exists yet, so the epoch can move with the clock.
		if vc := q.rt.Server().Clock(); vc != nil {
			q.clock = virtualTimerClock(vc)
			q.epoch = q.clock.now()
		}
	}
	d := time.Duration(secs * float64(time.Second))
	t := &timer{q: q, fn: fn, index: -1, active: true}
	if repeat {
		t.every = d
	}
	ud := L.NewUserData()
	ud.Value = t
	L.SetMetatable(ud, L.GetTypeMetatable(timerType))
	q.live++
	q.schedule(t, q.now()+d)
	L.Push(ud)
	return 1
}

// schedule puts t in the heap, due at when.
func (q *timers) schedule(t *timer, when time.Duration) {
	q.seq++
	t.when, t.seq = when, q.seq
	heap.Push(&q.heap, t)
	// A running batch arms when it ends; otherwise only a timer due
	// before the batch already on its way needs the alarm moved.
	if !q.inBatch && (!q.armed || when < q.armedFor) {
		q.arm()
	}
}

// cancel stops t. It is O(log n) and leaves the alarm alone: if t was the
// earliest, the batch the alarm brings finds nothing due and re-arms.
func (q *timers) cancel(t *timer) {
	if !t.active {
		return
	}
	t.active = false
	q.live--
	if t.index >= 0 {
		heap.Remove(&q.heap, t.index)
	}
}

// arm makes sure a batch comes for the earliest timer.
func (q *timers) arm() {
	if len(q.heap) == 0 {
		if q.alarm != nil {
			q.alarm.Stop() // no batch to run: none to wake up for
		}
		q.armed = false
		return
	}
	next := q.heap[0].when
	q.armed, q.armedFor = true, next
	d := next - q.now()
	if d <= 0 {
		// Due already (timer.after(0), or a batch that ran late): the
		// batch goes straight to the lane, behind the events queued there.
		q.rt.Post(q.v.lane, q.batchFn)
		return
	}
	if q.alarm == nil {
		q.alarm = q.clock.afterFunc(d, q.ringFn)
		return
	}
	q.alarm.Reset(d)
}

// ring runs on the alarm's goroutine: it hands the batch to the lane. It
// reads only fields set before the alarm was made.
func (q *timers) ring() { q.rt.Post(q.v.lane, q.batchFn) }

// batch runs, in deadline order, every timer due when it starts, except
// those scheduled while it runs (every's next run, a callback's new
// timers): they wait for a later batch, so a timer.after(0) that starts
// itself again cannot hold the lane, and connection events run between
// batches.
func (q *timers) batch() {
	if q.closed {
		return
	}
	// Whatever brought this batch is spent; an alarm still set (for a
	// later deadline, when a due batch was posted directly) is reset by
	// the arm at the end.
	q.armed = false
	q.inBatch = true
	defer q.endBatch() // a Go panic out of a callback must not stall the timers
	now := q.now()
	last := q.seq
	for len(q.heap) > 0 {
		t := q.heap[0]
		// A timer scheduled during this batch is due at the earliest when
		// the batch began, so every older due timer sorts before it:
		// meeting one on top means the batch is done.
		if t.when > now || t.seq > last {
			break
		}
		heap.Pop(&q.heap)
		q.fire(t, now)
		if q.closed {
			return
		}
	}
}

func (q *timers) endBatch() {
	q.inBatch = false
	if !q.closed {
		q.arm()
	}
}

// fire runs t's callback. A one-shot timer is spent before its callback
// runs, so the callback may start another within the limit; an every
// timer is rescheduled after its callback returns, a period after the
// batch it ran in, so a slow callback is followed by one next run, never a
// backlog.
func (q *timers) fire(t *timer, ranAt time.Duration) {
	v := q.v
	if t.every == 0 {
		t.active = false
		q.live--
	}
	if v.resumable {
		v.start("timer", nil, t.fn, func(_ []glua.LValue, err error) {
			if err != nil && !errors.Is(err, errDropped) {
				v.fail("timer", err)
			}
		})
	} else {
		v.L.Push(t.fn)
		if err := v.call("timer", 0, 0); err != nil {
			v.fail("timer", err)
		}
	}
	if t.active && t.every > 0 && !q.closed {
		q.schedule(t, ranAt+t.every)
	}
}

// close stops every timer and the alarm: nothing fires afterwards. A batch
// already posted finds the queue closed.
func (q *timers) close() {
	q.closed = true
	if q.alarm != nil {
		q.alarm.Stop()
	}
	for _, t := range q.heap {
		t.active, t.index = false, -1
	}
	q.heap, q.live, q.armed = nil, 0, false
}

// timerHeap is a container/heap of timers by deadline, then seq.
type timerHeap []*timer

// Len implements heap.Interface.
func (h timerHeap) Len() int { return len(h) }

// Less implements heap.Interface.
func (h timerHeap) Less(i, j int) bool {
	if h[i].when != h[j].when {
		return h[i].when < h[j].when
	}
	return h[i].seq < h[j].seq
}

// Swap implements heap.Interface, keeping each timer's index.
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

// Push implements heap.Interface.
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.index = len(*h)
	*h = append(*h, t)
}

// Pop implements heap.Interface.
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old) - 1
	t := old[n]
	old[n] = nil // no reference for the GC to follow
	t.index = -1
	*h = old[:n]
	return t
}
