//go:build linux

package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/cmd/moonbench/baseline"
	mwconfig "github.com/moonwire/moonwire/router/config"
)

func TestNodeListFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-scenario", "broadcast", "-url", "ws://127.0.0.1:1/room, ws://127.0.0.1:2/room",
		"-pid", "11,22", "-broker-pid", "33"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.urls) != 2 || cfg.urls[1] != "ws://127.0.0.1:2/room" {
		t.Errorf("urls %q", cfg.urls)
	}
	if len(cfg.pids) != 2 || cfg.pids[0] != 11 || cfg.pids[1] != 22 || cfg.brokerPID != 33 {
		t.Errorf("pids %v broker %d", cfg.pids, cfg.brokerPID)
	}
	cfg, err = parseFlags([]string{"-scenario", "echo", "-pid", "7"}, &bytes.Buffer{})
	if err != nil || len(cfg.pids) != 1 || cfg.pids[0] != 7 || len(cfg.urls) != 1 {
		t.Errorf("one pid: %v %v %q", err, cfg.pids, cfg.urls)
	}
	for _, bad := range [][]string{
		{"-scenario", "broadcast", "-url", "ws://127.0.0.1:1/a,,ws://127.0.0.1:2/a"},
		{"-scenario", "broadcast", "-pid", "1,x"},
		{"-scenario", "broadcast", "-baseline", "-url", "ws://127.0.0.1/a,ws://127.0.0.1/b"},
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := parseClusterFlags([]string{"-brokers", "redis,kafka"}, &bytes.Buffer{}); err == nil {
		t.Error("-brokers kafka: no error")
	}
	o, err := parseClusterFlags(nil, &bytes.Buffer{})
	if err != nil || o.nodes != 3 || o.subs != 10000 || len(o.brokers) != 2 || o.p99Max != 100*time.Millisecond {
		t.Errorf("cluster-compare defaults: %v %+v", err, o)
	}
}

// Subscribers go round-robin over the -url list, publishers to the first,
// and -pid's processes are sampled one by one and summed. Both URLs are
// the same server (one room), and both pids this process (which serves
// it), so nothing may be lost and the sum is twice one node.
func TestBroadcastNodes(t *testing.T) {
	t.Parallel()
	addr, _ := startBaseline(t, baseline.KindChat)
	u := "ws://" + addr + "/room"
	self := strconv.Itoa(os.Getpid())
	m := runJSON(t, append([]string{"-scenario", "broadcast", "-url", u + "," + u + "," + u,
		"-subs", "10", "-pubs", "1", "-rate", "0", "-inflight", "4", "-pid", self + "," + self}, short...)...)
	wantZero(t, m, "lost", "errors", "dial_errors")
	wantPositive(t, m, "deliveries", "server_cpu_s")
	per, _ := m["subs_per_node"].([]any)
	if fmt.Sprint(per) != "[4 3 3]" {
		t.Errorf("subs_per_node %v, want [4 3 3]", m["subs_per_node"])
	}
	nodes, _ := m["server_nodes"].([]any)
	if len(nodes) != 2 {
		t.Fatalf("server_nodes %v, want 2", m["server_nodes"])
	}
	var sum float64
	for _, n := range nodes {
		sum += n.(map[string]any)["server_cpu_s"].(float64)
	}
	if got := num(t, m, "server_cpu_s"); got < sum-0.02 || got > sum+0.02 {
		t.Errorf("server_cpu_s %v, nodes sum to %v", got, sum)
	}
}

func TestRateSearch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want float64 }{{137, 140}, {1234, 1200}, {8.26, 8.3}, {10, 10}} {
		if got := niceRate(c.in); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("niceRate(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	steps := []struct{ lo, hi, reached, want float64 }{
		{100, 0, 0, 130},   // passed: try higher
		{0, 100, 90, 75},   // failed: lower
		{0, 100, 50, 45},   // failed far below the rate: just under what it reached
		{100, 130, 0, 110}, // between
		{10, 95, 73, 66},   // between, under what the failure reached
		{100, 110, 0, 0},   // close enough
		{0, 12, 12, 0},     // under the floor (10)
	}
	for _, s := range steps {
		if got := nextRate(s.lo, s.hi, s.reached, 10); got != s.want {
			t.Errorf("nextRate(%v, %v, %v) = %v, want %v", s.lo, s.hi, s.reached, got, s.want)
		}
	}
	ok, why := judge(&broadcastResult{Rate: 100, PublishRate: 99, Deliveries: 1, latency: latency{P99: 50e3}}, 100*time.Millisecond)
	if !ok {
		t.Errorf("judge: %s", why)
	}
	ok, why = judge(&broadcastResult{Rate: 100, PublishRate: 80, Lost: 3, Deliveries: 1, latency: latency{P99: 150e3}}, 100*time.Millisecond)
	if ok || !strings.Contains(why, "3 lost") || !strings.Contains(why, "published") || !strings.Contains(why, "p99") {
		t.Errorf("judge: %v %q", ok, why)
	}
}

// Two in-process moonwire nodes on the config cluster-compare writes,
// sharing the Redis at 127.0.0.1:6379: a broadcast on the first reaches
// the subscribers of both.
func TestMoonwireRedisCluster(t *testing.T) {
	t.Parallel()
	c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second)
	if err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379 (%v)", err)
	}
	c.Close()
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	prefix := "moonbench-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	file := filepath.Join(t.TempDir(), "node.toml")
	if err := os.WriteFile(file, []byte(nodeConfig(abs, 1, 0, "redis", "redis://127.0.0.1:6379", prefix)), 0o644); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for range 2 {
		cfg, err := mwconfig.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		n, err := moonwire.New(moonwire.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			n.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		urls = append(urls, "ws://"+n.Addr()+"/room")
	}
	m := runJSON(t, "-scenario", "broadcast", "-url", strings.Join(urls, ","), "-subs", "10", "-pubs", "1",
		"-rate", "200", "-inflight", "8", "-duration", "500ms", "-warmup", "300ms", "-close-wait", "1s", "-label", "test")
	wantPositive(t, m, "deliveries", "expected")
	wantZero(t, m, "lost", "errors", "protocol_errors", "unexpected_messages")
	if num(t, m, "delivered") != num(t, m, "expected") {
		t.Errorf("delivered %v of %v", m["delivered"], m["expected"])
	}
}
