package router

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// VirtualClock is a time source that moves only when told to (Advance):
// `moonwire test` gives one to each test's server, so that heartbeats and
// script timers due in minutes are tested in microseconds, and in a
// deterministic order. Config.Clock nil (production) means the wall
// clock; the clock is then never consulted.
//
// The read path stamps a connection's last-seen time with the clock's
// current value through a plain atomic load (Server.nowNs), never an
// interface call or a lock: production pays one nil check per read.
type VirtualClock struct {
	now atomic.Int64 // unix nanoseconds

	mu      sync.Mutex
	alarms  []*VirtualTimer // pending, in no order: a test has few
	seq     uint64
	settles []func() // run after each firing: wait for its effects
}

// NewVirtualClock returns a clock reading start until advanced.
func NewVirtualClock(start time.Time) *VirtualClock {
	c := &VirtualClock{}
	c.now.Store(start.UnixNano())
	return c
}

// Now returns the clock's time.
func (c *VirtualClock) Now() time.Time { return time.Unix(0, c.now.Load()) }

// VirtualTimer is a VirtualClock's time.AfterFunc timer.
type VirtualTimer struct {
	c      *VirtualClock
	f      func()
	when   int64 // unix nanoseconds
	seq    uint64
	active bool
}

// AfterFunc calls f, from Advance, once the clock has moved d past now.
func (c *VirtualClock) AfterFunc(d time.Duration, f func()) *VirtualTimer {
	t := &VirtualTimer{c: c, f: f}
	t.Reset(d)
	return t
}

// Reset makes t due d after the clock's now; it reports whether t was
// pending.
func (t *VirtualTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := t.active
	c.seq++
	t.when, t.seq = c.now.Load()+int64(max(d, 0)), c.seq
	if !was {
		t.active = true
		c.alarms = append(c.alarms, t)
	}
	return was
}

// Stop cancels t; it reports whether t was pending.
func (t *VirtualTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.active {
		return false
	}
	t.active = false
	for i, a := range c.alarms {
		if a == t {
			c.alarms = append(c.alarms[:i], c.alarms[i+1:]...)
			break
		}
	}
	return true
}

// onSettle registers f, which Advance calls after each firing to wait
// until what the firing started (lane tasks) has run.
func (c *VirtualClock) onSettle(f func()) {
	c.mu.Lock()
	c.settles = append(c.settles, f)
	c.mu.Unlock()
}

// Advance moves the clock d forward. Every timer due within d fires, in
// deadline order (ties in the order they were set), the clock reading its
// deadline; after each firing Advance waits for the lanes to run what it
// posted (a script timer's batch, the close a heartbeat sweep started), so
// that when Advance returns every effect is queued. Timers set by a firing
// fire within the same Advance if due within d. Only one goroutine should
// advance a clock at a time. A ctx done stops it between firings (a
// runaway timer.every over a long d), with its error.
func (c *VirtualClock) Advance(ctx context.Context, d time.Duration) error {
	target := c.now.Load() + int64(max(d, 0))
	// What the test started before advancing (an on_start's timers, a
	// connection's on_open) runs first: its timers are then set.
	c.mu.Lock()
	settles := c.settles
	c.mu.Unlock()
	c.settle(settles)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("advancing the virtual clock: %w", err)
		}
		c.mu.Lock()
		var next *VirtualTimer
		at := -1
		for i, a := range c.alarms {
			if a.when <= target && (next == nil || a.when < next.when || a.when == next.when && a.seq < next.seq) {
				next, at = a, i
			}
		}
		if next == nil {
			c.now.Store(target)
			settles := c.settles
			c.mu.Unlock()
			c.settle(settles)
			return nil
		}
		c.alarms = append(c.alarms[:at], c.alarms[at+1:]...)
		next.active = false
		if next.when > c.now.Load() {
			c.now.Store(next.when)
		}
		settles := c.settles
		c.mu.Unlock()
		next.f()
		c.settle(settles)
	}
}

func (c *VirtualClock) settle(settles []func()) {
	for _, f := range settles {
		f()
	}
}

// Clock returns the server's virtual clock; nil: the wall clock.
func (s *Server) Clock() *VirtualClock { return s.clock }

// nowNs is the server's time in unix nanoseconds: the wall clock's, or
// the virtual clock's in tests. It costs production one nil check.
func (s *Server) nowNs() int64 {
	if s.clock != nil {
		return s.clock.now.Load()
	}
	return time.Now().UnixNano()
}

// settleRounds is how many barriers settle posts to each lane in turn: a
// task the first round's tasks posted (a timer.after(0) started by a
// timer's callback) runs before the second barrier, and so on.
const settleRounds = 3

// settle waits until the handshakes in progress are done (a client may
// see its 101 before the server queues its on_open) and then until every
// lane of every route has run what was queued on it, settleRounds times
// over. A lane that is stopped (the server is closing) is skipped.
func (s *Server) settle() {
	// Polled: handshakes signal nothing when they end, and this runs only
	// under a virtual clock, where a handshake takes microseconds (and at
	// most HandshakeTimeout).
	for {
		s.mu.Lock()
		n := len(s.handshakes)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	for range settleRounds {
		var wg sync.WaitGroup
		for _, rt := range s.routes.Load().all {
			for i := range rt.lanes {
				wg.Add(1)
				if !rt.Post(i, wg.Done) {
					wg.Done()
				}
			}
		}
		wg.Wait()
	}
}
