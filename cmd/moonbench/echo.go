//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
)

type echoResult struct {
	common
	Conns      int     `json:"conns"`
	Inflight   int     `json:"inflight"`
	Size       int     `json:"size"`
	RoundTrips int64   `json:"round_trips"`
	RTPerSec   float64 `json:"round_trips_per_s"`
	MiBPerSec  float64 `json:"payload_mib_per_s"`
	traffic
	PingsAnswer int64 `json:"pings_answered"`
	latency
}

func (r *echoResult) rows() [][2]string {
	rows := r.common.rows()
	rows = append(rows,
		[2]string{"connections", fmt.Sprintf("%d × %d in flight, %d-byte binary messages", r.Conns, r.Inflight, r.Size)},
		[2]string{"round trips", fmt.Sprintf("%d (%s/s, %.2f MiB/s each way)", r.RoundTrips, fmtRate(r.RTPerSec), r.MiBPerSec)},
		[2]string{"latency", r.latency.String()},
	)
	return append(rows, r.traffic.rows()...)
}

func runEcho(ctx context.Context, cfg *config, log io.Writer) (result, error) {
	lim, d, err := prepare(cfg, cfg.conns, cfg.dialConc)
	if err != nil {
		return nil, err
	}
	sp := &spec{
		inflight: cfg.inflight,
		size:     cfg.size,
		tmpl:     newTemplate(padding(cfg.size, 8)),
	}
	sp.key = sp.tmpl.mask
	dr := dialAll(ctx, d, cfg.conns, cfg.dialConc, nil)
	if dr.ok == 0 {
		return nil, fmt.Errorf("no connection to %s: %s", cfg.url, describeDialErrors(dr, cfg.conns, lim))
	}
	if dr.errors > 0 {
		logf(log, "%s", describeDialErrors(dr, cfg.conns, lim))
	}
	e, err := newEngine(cfg.workers, sp)
	if err != nil {
		closeRaw(dr.conns)
		return nil, err
	}
	k := 0
	for i, rc := range dr.conns {
		if rc.fd < 0 {
			continue
		}
		dr.conns[i].fd = -1
		if err := e.workers[k%len(e.workers)].add(rc, roleEcho, nil); err != nil {
			return nil, err
		}
		k++
	}
	start := nowNs()
	sp.warmEnd = start + int64(cfg.warmup)
	sp.end = sp.warmEnd + int64(cfg.duration)
	res := &echoResult{common: newCommon(cfg, lim)}
	window := res.measure(ctx, e, cfg, sp.warmEnd, sp.end)
	st := e.shutdown(cfg.closeWait)

	res.WindowS = round2(window.Seconds())
	res.Conns = dr.ok
	res.Inflight = cfg.inflight
	res.Size = cfg.size
	res.RoundTrips = st.ops
	if window > 0 {
		res.RTPerSec = round2(float64(st.ops) / window.Seconds())
		res.MiBPerSec = round2(res.RTPerSec * float64(cfg.size) / (1 << 20))
	}
	res.take(st, dr.errors)
	res.PingsAnswer = st.pings
	res.latency = newLatency(&st.hist)
	res.engineLoad(st)
	res.perOp(st.ops, "round trip")
	return res, nil
}
