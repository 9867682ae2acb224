//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

type handshakeResult struct {
	common
	Dialers     int              `json:"dialers"`
	Connects    int64            `json:"connects"`
	ConnectsPS  float64          `json:"connects_per_s"`
	Refused     int64            `json:"refused"`
	RefusedBy   map[string]int64 `json:"refused_by_status,omitempty"`
	Errors      int64            `json:"errors"`
	ErrorKinds  map[string]int64 `json:"error_kinds,omitempty"`
	CloseErrors int64            `json:"close_errors"`
	Sources     int              `json:"sources"`
	latency
}

func (r *handshakeResult) rows() [][2]string {
	rows := r.common.rows()
	return append(rows,
		[2]string{"dialers", fmt.Sprintf("%d, from %d source addresses", r.Dialers, r.Sources)},
		[2]string{"connects", fmt.Sprintf("%d (%s/s): dial, upgrade, close frame, wait for the server's close", r.Connects, fmtRate(r.ConnectsPS))},
		[2]string{"handshake latency", r.latency.String() + " (TCP connect + upgrade)"},
		[2]string{"refused", fmt.Sprintf("%d%s", r.Refused, fmtKinds(r.RefusedBy))},
		[2]string{"errors", fmt.Sprintf("%d%s", r.Errors, fmtKinds(r.ErrorKinds))},
		[2]string{"close errors", fmt.Sprintf("%d (the server did not close after our close frame)", r.CloseErrors)},
	)
}

// hsStats are one dialer's counters.
type hsStats struct {
	hist      hist
	connects  int64
	refused   map[string]int64
	errKinds  map[string]int64
	closeErrs int64
	locals    map[string]bool
}

func runHandshake(ctx context.Context, cfg *config, log io.Writer) (result, error) {
	lim, d, err := prepare(cfg, cfg.conns, 0)
	if err != nil {
		return nil, err
	}
	key := newTemplate(nil).mask
	closeFrame := appendClose(nil, ws.StatusNormalClosure, key)

	start := nowNs()
	warmEnd := start + int64(cfg.warmup)
	end := warmEnd + int64(cfg.duration)
	stats := make([]*hsStats, cfg.conns)
	var wg sync.WaitGroup
	var srv *serverSampler
	var cl clientSampler
	var sampleOnce sync.WaitGroup
	sampleOnce.Add(1)
	go func() {
		defer sampleOnce.Done()
		_ = sleepUntil(ctx, warmEnd)
		srv = startServerSampler(cfg.pids)
		cl = startClientSampler()
	}()
	for g := 0; g < cfg.conns; g++ {
		st := &hsStats{refused: map[string]int64{}, errKinds: map[string]int64{}, locals: map[string]bool{}}
		stats[g] = st
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			buf := make([]byte, 512)
			for i := 0; ctx.Err() == nil; i++ {
				t0 := nowNs()
				if t0 >= end {
					return
				}
				wd := d.wsDialer(g + i*cfg.conns)
				conn, br, _, err := wd.Dial(ctx, d.target(g+i*cfg.conns))
				t1 := nowNs()
				if br != nil {
					ws.PutReader(br)
				}
				inWindow := t0 >= warmEnd && t1 <= end
				if err != nil {
					var se ws.StatusError
					if errors.As(err, &se) {
						if inWindow {
							st.refused[fmt.Sprintf("http %d", int(se))]++
						}
						continue
					}
					if inWindow {
						st.errKinds[errClass(err)]++
					}
					if ctx.Err() == nil {
						time.Sleep(time.Millisecond) // do not spin on a dead server
					}
					continue
				}
				if inWindow {
					st.connects++
					st.hist.add(t1 - t0)
				}
				if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok && len(st.locals) < 256 {
					st.locals[ta.IP.String()] = true
				}
				// Close as a client should: send a close frame and let the
				// server close the TCP connection first (its side keeps the
				// TIME_WAIT).
				_ = conn.SetDeadline(time.Now().Add(cfg.closeWait))
				if _, err := conn.Write(closeFrame); err == nil {
					for {
						if _, err = conn.Read(buf); err != nil {
							break
						}
					}
					if !errors.Is(err, io.EOF) && inWindow {
						st.closeErrs++
					}
				} else if inWindow {
					st.closeErrs++
				}
				conn.Close()
			}
		}(g)
	}
	wg.Wait()
	sampleOnce.Wait()
	window := time.Duration(min(nowNs(), end) - warmEnd)
	res := &handshakeResult{common: newCommon(cfg, lim), Dialers: cfg.conns}
	if srv != nil {
		res.serverStats = srv.finish()
		res.clientStats = cl.finish()
	}
	var all hist
	locals := map[string]bool{}
	res.RefusedBy = map[string]int64{}
	res.ErrorKinds = map[string]int64{}
	for _, st := range stats {
		all.merge(&st.hist)
		res.Connects += st.connects
		for k, v := range st.refused {
			res.RefusedBy[k] += v
			res.Refused += v
		}
		for k, v := range st.errKinds {
			res.ErrorKinds[k] += v
			res.Errors += v
		}
		res.CloseErrors += st.closeErrs
		for k := range st.locals {
			locals[k] = true
		}
	}
	if len(res.RefusedBy) == 0 {
		res.RefusedBy = nil
	}
	if len(res.ErrorKinds) == 0 {
		res.ErrorKinds = nil
	}
	res.Sources = len(locals)
	res.WindowS = round2(window.Seconds())
	if window > 0 {
		res.ConnectsPS = round2(float64(res.Connects) / window.Seconds())
	}
	res.latency = newLatency(&all)
	res.perOp(res.Connects, "connect")
	return res, nil
}
