//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// dialResult tallies a batch of dials.
type dialResult struct {
	conns    []rawConn // by index; fd -1 where the dial failed
	ok       int
	errors   int
	errKinds map[string]int64
	sources  int // distinct local addresses used
	elapsed  time.Duration
}

// dialAll dials n connections, conc at a time, and calls each(i, rc) for
// every success (from the dialing goroutines) when each is not nil. A
// descriptor-limit error stops the batch: more dials would fail the same.
func dialAll(ctx context.Context, d *dialer, n, conc int, each func(int, rawConn)) *dialResult {
	res := &dialResult{conns: make([]rawConn, n), errKinds: map[string]int64{}}
	for i := range res.conns {
		res.conns[i].fd = -1
	}
	var (
		next   atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
		halt   atomic.Bool
		locals = map[string]bool{}
	)
	start := time.Now()
	for g := 0; g < min(conc, n); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !halt.Load() && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				rc, err := d.dialRaw(ctx, i)
				mu.Lock()
				res.conns[i] = rc
				if err != nil {
					res.errors++
					k := errClass(err)
					res.errKinds[k]++
					if k == "too many open files" {
						halt.Store(true)
					}
				} else {
					res.ok++
					if rc.local != nil {
						locals[rc.local.String()] = true
					}
				}
				mu.Unlock()
				if err == nil && each != nil {
					each(i, rc)
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.sources = len(locals)
	return res
}

// describeDialErrors explains failed dials, naming the descriptor limit
// when that is the cause.
func describeDialErrors(r *dialResult, want int, fdLimit uint64) string {
	s := fmt.Sprintf("%d of %d connections failed%s", r.errors, want, fmtKinds(r.errKinds))
	if r.errKinds["too many open files"] > 0 {
		s += fmt.Sprintf("; RLIMIT_NOFILE is %d for this process (the server has its own limit, too)", fdLimit)
	}
	return s
}

// prepare is every scenario's start: it checks that n connections, dialed
// conc at a time, fit the descriptor limit (which it returns, for error
// messages), and makes the dialer.
func prepare(cfg *config, n, conc int) (uint64, *dialer, error) {
	lim, err := checkFDs(n, conc)
	if err != nil {
		return 0, nil, err
	}
	d, err := newDialer(cfg)
	if err != nil {
		return 0, nil, err
	}
	return lim, d, nil
}

func newDialer(cfg *config) (*dialer, error) {
	h, err := parseHeaders(cfg.headers)
	if err != nil {
		return nil, err
	}
	var srcs []net.IP
	for _, u := range cfg.urls {
		if srcs, err = sourceAddrs(cfg.sources, u); err != nil {
			return nil, err
		}
	}
	return &dialer{urls: cfg.urls, header: h, timeout: cfg.dialTimeout, sources: srcs}, nil
}

// sleepUntil sleeps until the monotonic time t (ns since epoch) or ctx ends.
func sleepUntil(ctx context.Context, t int64) error {
	d := time.Duration(t - nowNs())
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "moonbench: "+format+"\n", args...)
	}
}

// closeRaw closes the descriptors of dialed connections not given to an
// engine.
func closeRaw(cs []rawConn) {
	for _, c := range cs {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
	}
}
