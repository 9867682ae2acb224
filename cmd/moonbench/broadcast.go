//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

type broadcastResult struct {
	common
	Subs           int     `json:"subs"`
	Pubs           int     `json:"pubs"`
	Size           int     `json:"size"`
	Inflight       int     `json:"inflight"`
	Rate           float64 `json:"rate_target"`
	SubsPerNode    []int   `json:"subs_per_node,omitempty"`
	Published      int64   `json:"published"`
	PublishRate    float64 `json:"publish_rate"`
	SkippedSlots   int64   `json:"skipped_slots"`
	Deliveries     int64   `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	Expected       int64   `json:"expected"`
	Delivered      int64   `json:"delivered"`
	Lost           int64   `json:"lost"`
	Gaps           int64   `json:"gaps"`
	OutOfOrder     int64   `json:"out_of_order"`
	traffic
	PubReceived   int64    `json:"publisher_received"`
	CPUPerMillion *float64 `json:"server_cpu_s_per_million_deliveries,omitempty"`
	// DeliveriesPerWrite is deliveries per server write system call: 1
	// when every message goes out on its own, more when the server
	// batches a connection's queued messages into one write.
	DeliveriesPerWrite *float64 `json:"deliveries_per_server_write,omitempty"`
	DrainS             float64  `json:"drain_s"`
	latency
}

func (r *broadcastResult) rows() [][2]string {
	rows := r.common.rows()
	target := "as fast as -inflight allows"
	if r.Rate > 0 {
		target = fmtRate(r.Rate) + "/s target"
	}
	rows = append(rows,
		[2]string{"connections", fmt.Sprintf("%d subscribers, %d publishers, %d-byte binary messages, %d in flight per publisher", r.Subs, r.Pubs, r.Size, r.Inflight)},
	)
	if len(r.SubsPerNode) > 1 {
		rows = append(rows, [2]string{"nodes", fmt.Sprintf("%d: subscribers %v, publishers on the first", len(r.SubsPerNode), r.SubsPerNode)})
	}
	rows = append(rows,
		[2]string{"published", fmt.Sprintf("%d (%s/s; %s; %d slots skipped: pipeline full)", r.Published, fmtRate(r.PublishRate), target, r.SkippedSlots)},
		[2]string{"deliveries", fmt.Sprintf("%d (%s/s)", r.Deliveries, fmtRate(r.DeliveriesPerS))},
		[2]string{"delivery latency", r.latency.String()},
		[2]string{"lost", fmt.Sprintf("%d of %d expected (gaps %d, out of order %d; waited %.2fs after the window)", r.Lost, r.Expected, r.Gaps, r.OutOfOrder, r.DrainS)},
	)
	rows = append(rows, r.traffic.rows()...)
	if r.Unexpected > 0 {
		rows = append(rows, [2]string{"other messages", fmt.Sprintf("%d (not moonbench's: ignored)", r.Unexpected)})
	}
	if r.CPUPerMillion != nil {
		rows = append(rows, [2]string{"server CPU / 1M deliveries", fmt.Sprintf("%.2fs", *r.CPUPerMillion)})
	}
	if r.DeliveriesPerWrite != nil {
		rows = append(rows, [2]string{"deliveries per server write", fmt.Sprintf("%.2f (write system calls, all nodes)", *r.DeliveriesPerWrite)})
	}
	return rows
}

func runBroadcast(ctx context.Context, cfg *config, log io.Writer) (result, error) {
	n := cfg.subs + cfg.pubs
	lim, d, err := prepare(cfg, n, cfg.dialConc)
	if err != nil {
		return nil, err
	}
	// Subscribers round-robin over the nodes, publishers on the first:
	// with several nodes, most deliveries cross the broker.
	d.node = func(i int) int {
		if i >= cfg.subs {
			return 0
		}
		return i % len(d.urls)
	}
	sp := &spec{
		inflight: cfg.inflight,
		size:     cfg.size,
		tmpl:     newTemplate(padding(cfg.size, 16)),
		subs:     int64(cfg.subs),
		rate:     cfg.rate,
	}
	sp.key = sp.tmpl.mask
	for i := 0; i < cfg.pubs; i++ {
		sp.pubs = append(sp.pubs, &publisher{idx: uint32(i)})
	}
	if cfg.rate > 0 {
		sp.interval = max(1, int64(float64(time.Second)*float64(cfg.pubs)/cfg.rate))
		sp.burst = int64(cfg.inflight)
		if sp.burst == 0 {
			sp.burst = 1 << 20
		}
	}
	// Every connection is open before anything is published.
	dr := dialAll(ctx, d, n, cfg.dialConc, nil)
	if dr.errors > 0 {
		closeRaw(dr.conns)
		return nil, fmt.Errorf("setting up: %s", describeDialErrors(dr, n, lim))
	}
	e, err := newEngine(cfg.workers, sp)
	if err != nil {
		closeRaw(dr.conns)
		return nil, err
	}
	for i, rc := range dr.conns {
		dr.conns[i].fd = -1
		w := e.workers[i%len(e.workers)]
		if i < cfg.subs {
			err = w.add(rc, roleSub, nil)
		} else {
			err = w.add(rc, rolePub, sp.pubs[i-cfg.subs])
		}
		if err != nil {
			return nil, err
		}
	}
	// Give the server a moment to put the last connections in the room.
	start := nowNs() + int64(100*time.Millisecond)
	if cfg.rate > 0 {
		slot := float64(time.Second) / cfg.rate
		for i, p := range sp.pubs {
			p.phase0 = start + int64(float64(i)*slot)
		}
	}
	sp.warmEnd = start + int64(cfg.warmup)
	sp.end = sp.warmEnd + int64(cfg.duration)
	res := &broadcastResult{common: newCommon(cfg, lim)}
	window := res.measure(ctx, e, cfg, sp.warmEnd, sp.end)

	// Wait for the deliveries of messages sent inside the window.
	expected := func() int64 {
		var m int64
		for _, p := range sp.pubs {
			m += p.sentCounted.Load()
		}
		return m * sp.subs
	}
	drainStart := time.Now()
	time.Sleep(5 * time.Millisecond) // publishers notice the end
	for e.delivCounted() < expected() && time.Since(drainStart) < cfg.drain && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	res.DrainS = round2(time.Since(drainStart).Seconds())
	exp := expected()
	got := e.delivCounted()
	st := e.shutdown(cfg.closeWait)

	var published, skipped int64
	for _, p := range sp.pubs {
		published += p.sentCounted.Load()
		skipped += p.skipped
	}
	res.WindowS = round2(window.Seconds())
	res.Subs = cfg.subs
	res.Pubs = cfg.pubs
	res.Size = cfg.size
	res.Inflight = cfg.inflight
	res.Rate = cfg.rate
	if len(cfg.urls) > 1 {
		res.SubsPerNode = make([]int, len(cfg.urls))
		for i := 0; i < cfg.subs; i++ {
			res.SubsPerNode[d.node(i)]++
		}
	}
	res.Published = published
	res.SkippedSlots = skipped
	res.Deliveries = st.ops
	if window > 0 {
		res.PublishRate = round2(float64(published) / window.Seconds())
		res.DeliveriesPerS = round2(float64(st.ops) / window.Seconds())
	}
	res.Expected = exp
	res.Delivered = got
	res.Lost = max(0, exp-got)
	res.Gaps = st.gaps
	res.OutOfOrder = st.outOfOrder
	res.take(st, 0) // a failed dial ends the run before the window
	res.PubReceived = st.pubReceived
	res.latency = newLatency(&st.hist)
	res.engineLoad(st)
	res.perOp(st.ops, "delivery")
	if s := res.serverStats; s != nil && s.SampleErr == "" && st.ops > 0 {
		v := math.Round(s.CPUSec/(float64(st.ops)/1e6)*1000) / 1000
		res.CPUPerMillion = &v
		if s.Writes != nil && *s.Writes > 0 {
			w := round2(float64(st.ops) / float64(*s.Writes))
			res.DeliveriesPerWrite = &w
		}
	}
	return res, nil
}
