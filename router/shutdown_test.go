package router_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// serve starts a router on 127.0.0.1:0 with cfg; the caller shuts it down.
func serve(t *testing.T, cfg router.Config) (*router.Server, string) {
	t.Helper()
	// MOONWIRE_TEST_FLUSH=plain: the flush workers' plain path (see
	// moontest.StartConfig).
	cfg.NoRing = cfg.NoRing || os.Getenv("MOONWIRE_TEST_FLUSH") == "plain"
	srv, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String()
}

// stuckHandler blocks in Message on "stick" until release is closed: a
// handler that a drain cannot wait for.
type stuckHandler struct {
	goEcho
	entered chan struct{}
	release chan struct{}
}

func (h *stuckHandler) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	if string(d) == "stick" {
		close(h.entered)
		<-h.release
	}
	_ = c.Send(k, d)
}

// TestShutdownAbandonsAStuckLane: a lane stuck in a handler cannot run the
// Close events a drain waits for; Shutdown gives up on it within
// AbandonGrace of its deadline, names the route and lane, and returns
// ErrAbandoned, so the process can exit.
func TestShutdownAbandonsAStuckLane(t *testing.T) {
	t.Parallel()
	h := &stuckHandler{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(h.release)
	var logs moontest.Logs
	srv, addr := serve(t, router.Config{
		Routes: []router.RouteSpec{{Pattern: "/stuck", Handler: h, Lanes: 1}, {Pattern: "/fine", Handler: goEcho{}, Lanes: 1}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	c := moontest.Dial(t, "ws://"+addr+"/stuck")
	c.Send("stick")
	select {
	case <-h.entered:
	case <-time.After(moontest.Timeout):
		t.Fatal("the handler never ran")
	}
	fine := moontest.Dial(t, "ws://"+addr+"/fine")
	fine.Send("x")
	fine.Expect("x")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(moontest.Timeout + 2*router.AbandonGrace):
		t.Fatal("Shutdown did not return: it waits on the stuck lane")
	}
	if !errors.Is(err, router.ErrAbandoned) || !strings.Contains(err.Error(), "route /stuck lane 0") {
		t.Fatalf("Shutdown: %v, want ErrAbandoned naming route /stuck lane 0", err)
	}
	if !strings.Contains(logs.String(), "stuck in a handler") || !strings.Contains(logs.String(), "route=/stuck") {
		t.Fatalf("no log line names the stuck route:\n%s", logs.String())
	}
	// The healthy route's client got its close all the same.
	fine.ExpectClose(1001)
}

// TestReconfigureRacingShutdown: reconfigurations (adding and removing
// routes) while a shutdown begins must never leave Shutdown waiting on a
// route it did not see: the two are exclusive.
func TestReconfigureRacingShutdown(t *testing.T) {
	t.Parallel()
	for i := range 40 {
		spec := func(n int) router.RouteSpec {
			return router.RouteSpec{Pattern: fmt.Sprintf("/r%d", n), Handler: goEcho{}, Lanes: 2}
		}
		srv, _ := serve(t, router.Config{Routes: []router.RouteSpec{spec(0)}})
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var stopOnce sync.Once
		// Also when a t.Fatalf below ends the test: the reconfiguring
		// goroutines must not outlive it.
		halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
		defer halt()
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					err := srv.Reconfigure(router.Config{Routes: []router.RouteSpec{spec(0), spec(1 + 100*w + n%7)}})
					if err != nil && !strings.Contains(err.Error(), "shutting down") {
						t.Errorf("reconfigure: %v", err)
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(i%5) * time.Millisecond) // vary where the shutdown lands
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(context.Background()) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Shutdown: %v", i, err)
			}
		case <-time.After(moontest.Timeout):
			t.Fatalf("round %d: Shutdown hung while reconfigurations ran", i)
		}
		halt()
	}
}
