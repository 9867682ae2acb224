package router_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// versionLog records, per connection (its "n" query parameter), the
// handler versions its Open and Resume events ran on, in order: "o1" for
// Open on version 1, "r2" for Resume on version 2.
type versionLog struct {
	mu     sync.Mutex
	events map[string][]string
}

func (l *versionLog) add(c *router.Conn, ev string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := c.Query("n")
	l.events[n] = append(l.events[n], ev)
}

func (l *versionLog) of(n string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events[n]...)
}

// versioned is an echo handler that logs its Open and Resume events.
type versioned struct {
	goEcho
	v      int
	log    *versionLog
	onStop func()
}

func (h *versioned) Open(_ int, c *router.Conn)   { h.log.add(c, fmt.Sprint("o", h.v)) }
func (h *versioned) Resume(_ int, c *router.Conn) { h.log.add(c, fmt.Sprint("r", h.v)) }
func (h *versioned) Stop() {
	if h.onStop != nil {
		h.onStop()
	}
}

// checkVersions checks one connection's events: one Open, then a Resume
// on each later version at most once, never on the version its Open ran
// on.
func checkVersions(evs []string) error {
	if len(evs) == 0 || evs[0][0] != 'o' {
		return fmt.Errorf("events %v: not Open first", evs)
	}
	last, _ := strconv.Atoi(evs[0][1:])
	for _, ev := range evs[1:] {
		v, _ := strconv.Atoi(ev[1:])
		if ev[0] != 'r' || v <= last {
			return fmt.Errorf("events %v: %s out of place", evs, ev)
		}
		last = v
	}
	return nil
}

// TestResumeOnlyTakesOverOpenConnections: a reload resumes the
// connections the old handler opened, and only those. A connection
// accepted during the reload is in the table before its Open is queued,
// so the reload queued a Resume for it too: the new handler got its Open
// and a Resume (a script armed its timers twice), or the Resume first.
func TestResumeOnlyTakesOverOpenConnections(t *testing.T) {
	t.Parallel()
	log := &versionLog{events: map[string][]string{}}
	route := func(h *versioned) router.Config {
		return router.Config{Routes: []router.RouteSpec{{Pattern: "/r", Handler: h, Lanes: 2}}}
	}
	v1 := &versioned{v: 1, log: log}
	srv, addr := serve(t, route(v1))
	t.Cleanup(func() { _ = srv.Close() })
	url := func(n string) string { return "ws://" + addr + "/r?n=" + n }

	old := moontest.Dial(t, url("old"))
	old.Send("x")
	old.Expect("x") // opened on v1

	// The reload stops v1 between switching the lanes to v2 and queuing
	// the Resumes: a connection opened on v2 meanwhile is in the table.
	v2 := &versioned{v: 2, log: log}
	var during *moontest.Client
	v1.onStop = func() {
		c, err := moontest.TryDial(t, url("during"))
		if err != nil {
			t.Errorf("dial during the reload: %v", err)
			return
		}
		during = c
		deadline := time.Now().Add(moontest.Timeout)
		for len(log.of("during")) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	must(t, srv.Reconfigure(route(v2)))
	if during == nil {
		t.FailNow()
	}
	defer during.Conn.Close()
	// Each lane has run what the reload queued once these come back.
	for _, c := range []*moontest.Client{old, during} {
		c.Send("y")
		c.Expect("y")
	}
	if got := fmt.Sprint(log.of("old")); got != "[o1 r2]" {
		t.Errorf("connection opened before the reload: %s, want [o1 r2]", got)
	}
	if got := fmt.Sprint(log.of("during")); got != "[o2]" {
		t.Errorf("connection opened during the reload: %s, want [o2]", got)
	}

	// Reloads racing a stream of new connections: each connection gets
	// one Open, and a Resume only from a handler later than its Open's.
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		clients sync.Map
	)
	defer func() {
		stop.Store(true)
		wg.Wait()
		clients.Range(func(_, c any) bool { c.(*moontest.Client).Conn.Close(); return true })
	}()
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				n := fmt.Sprintf("w%d-%d", w, i)
				c, err := moontest.TryDial(t, url(n))
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				clients.Store(n, c)
			}
		}()
	}
	for v := 3; v <= 12; v++ {
		must(t, srv.Reconfigure(route(&versioned{v: v, log: log})))
	}
	stop.Store(true)
	wg.Wait()
	clients.Range(func(_, c any) bool {
		c.(*moontest.Client).Send("z")
		c.(*moontest.Client).Expect("z")
		return true
	})
	clients.Range(func(n, _ any) bool {
		if err := checkVersions(log.of(n.(string))); err != nil {
			t.Errorf("connection %s: %v", n, err)
		}
		return true
	})
}
