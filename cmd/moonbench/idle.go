//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

type idleResult struct {
	common
	Conns        int              `json:"conns"`
	Opened       int              `json:"opened"`
	Held         int64            `json:"held"`
	Lost         int64            `json:"lost"`
	OpenS        float64          `json:"open_s"`
	OpenPerS     float64          `json:"open_per_s"`
	Sources      int              `json:"sources"`
	DialErrors   int              `json:"dial_errors"`
	DialKinds    map[string]int64 `json:"dial_error_kinds,omitempty"`
	Errors       int64            `json:"errors"`
	ErrorKinds   map[string]int64 `json:"error_kinds,omitempty"`
	Pings        int64            `json:"pings_answered"`
	Unexpected   int64            `json:"unexpected_messages"`
	Protocol     int64            `json:"protocol_errors"`
	SettleS      float64          `json:"settle_s"`
	RSSBefore    *int64           `json:"rss_before_bytes,omitempty"`
	RSSAfter     *int64           `json:"rss_after_bytes,omitempty"`
	RSSPerConn   *float64         `json:"rss_per_conn_bytes,omitempty"`
	RSSHeldAfter int64            `json:"held_at_rss_sample,omitempty"`
	RSSError     string           `json:"rss_error,omitempty"`
}

func (r *idleResult) rows() [][2]string {
	rows := r.common.rows()
	rows = append(rows,
		[2]string{"connections", fmt.Sprintf("%d requested, %d opened in %.2fs (%s/s) from %d source addresses", r.Conns, r.Opened, r.OpenS, fmtRate(r.OpenPerS), r.Sources)},
		[2]string{"held", fmt.Sprintf("%d after %.2fs", r.Held, r.WindowS)},
		[2]string{"lost", fmt.Sprintf("%d%s", r.Lost, fmtKinds(r.ErrorKinds))},
		[2]string{"pings answered", fmt.Sprint(r.Pings)},
		[2]string{"dial errors", fmt.Sprintf("%d%s", r.DialErrors, fmtKinds(r.DialKinds))},
	)
	if r.RSSBefore != nil && r.RSSAfter != nil {
		rows = append(rows,
			[2]string{"server RSS before", fmtBytes(*r.RSSBefore)},
			[2]string{"server RSS after", fmt.Sprintf("%s (%d connections open, %.1fs after the last opened)", fmtBytes(*r.RSSAfter), r.RSSHeldAfter, r.SettleS)},
		)
		if r.RSSPerConn != nil {
			rows = append(rows, [2]string{"server RSS per connection", fmtBytes(int64(*r.RSSPerConn))})
		}
	}
	if r.RSSError != "" {
		rows = append(rows, [2]string{"server RSS", "error: " + r.RSSError})
	}
	return rows
}

func runIdle(ctx context.Context, cfg *config, log io.Writer) (result, error) {
	lim, d, err := prepare(cfg, cfg.conns, cfg.dialConc)
	if err != nil {
		return nil, err
	}
	res := &idleResult{common: newCommon(cfg, lim), Conns: cfg.conns}
	res.WarmupS = 0
	var before int64
	if len(cfg.pids) > 0 {
		before, err = procRSSSum(cfg.pids)
		if err != nil {
			res.RSSError = err.Error()
		} else {
			res.RSSBefore = &before
		}
	}
	sp := &spec{end: math.MaxInt64, warmEnd: math.MaxInt64, key: newTemplate(nil).mask}
	e, err := newEngine(cfg.workers, sp)
	if err != nil {
		return nil, err
	}
	e.start()
	dr := dialAll(ctx, d, cfg.conns, cfg.dialConc, func(i int, rc rawConn) {
		e.workers[i%len(e.workers)].addLive(rc, roleIdle)
	})
	res.Opened = dr.ok
	res.OpenS = round2(dr.elapsed.Seconds())
	if dr.elapsed > 0 {
		res.OpenPerS = round2(float64(dr.ok) / dr.elapsed.Seconds())
	}
	res.Sources = dr.sources
	res.DialErrors = dr.errors
	if len(dr.errKinds) > 0 {
		res.DialKinds = dr.errKinds
	}
	if dr.errors > 0 {
		logf(log, "%s", describeDialErrors(dr, cfg.conns, lim))
	}
	opened := nowNs()
	end := opened + int64(cfg.duration)
	srv := startServerSampler(cfg.pids)
	cl := startClientSampler()
	settleAt := opened + int64(min(cfg.settle, cfg.duration))
	_ = sleepUntil(ctx, settleAt)
	res.SettleS = round2(time.Duration(nowNs() - opened).Seconds())
	res.RSSHeldAfter = e.live()
	if len(cfg.pids) > 0 {
		after, err := procRSSSum(cfg.pids)
		if err != nil {
			res.RSSError = err.Error()
		} else {
			res.RSSAfter = &after
			if res.RSSBefore != nil && res.RSSHeldAfter > 0 {
				v := math.Round(float64(after-before)/float64(res.RSSHeldAfter)*10) / 10
				res.RSSPerConn = &v
			}
		}
	}
	_ = sleepUntil(ctx, end)
	res.Held = e.live()
	res.WindowS = round2(time.Duration(nowNs() - opened).Seconds())
	res.serverStats = srv.finish()
	res.clientStats = cl.finish()
	st := e.shutdown(cfg.closeWait)
	res.Lost = int64(dr.ok) - res.Held
	res.Errors = st.errors
	res.ErrorKinds = st.errKinds
	res.Pings = st.pings
	res.Unexpected = st.unexpected
	res.Protocol = st.protocol
	return res, nil
}
