//go:build linux

package main

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/moonwire/moonwire"
	mwconfig "github.com/moonwire/moonwire/router/config"
)

// startMoonwire serves testdata/<name>.toml in-process on 127.0.0.1:0, after
// checking it as "moonwire check" does.
func startMoonwire(t *testing.T, name string) string {
	t.Helper()
	cfg, err := mwconfig.Load(filepath.Join("testdata", name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	if problems := moonwire.Check(cfg); len(problems) > 0 {
		t.Fatalf("%s: %v", name, problems)
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
	return n.Addr()
}

// The example configs the lead runs moonwire with work with every scenario.
func TestMoonwireConfigs(t *testing.T) {
	t.Parallel()
	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		addr := startMoonwire(t, "echo")
		m := runJSON(t, append([]string{"-scenario", "echo", "-url", "ws://" + addr + "/echo",
			"-conns", "10", "-inflight", "4"}, short...)...)
		wantPositive(t, m, "round_trips")
		wantZero(t, m, "errors", "mismatches", "protocol_errors", "dial_errors")
	})
	t.Run("broadcast", func(t *testing.T) {
		t.Parallel()
		addr := startMoonwire(t, "broadcast")
		m := runJSON(t, append([]string{"-scenario", "broadcast", "-url", "ws://" + addr + "/room",
			"-subs", "10", "-pubs", "2", "-rate", "0", "-inflight", "4"}, short...)...)
		wantPositive(t, m, "deliveries")
		wantZero(t, m, "lost", "errors", "mismatches", "protocol_errors", "unexpected_messages")
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		addr := startMoonwire(t, "idle")
		m := runJSON(t, "-scenario", "idle", "-url", "ws://"+addr+"/echo", "-conns", "20", "-sources", "3",
			"-duration", "300ms", "-settle", "50ms", "-close-wait", "1s", "-label", "test")
		if num(t, m, "held") != 20 {
			t.Errorf("held %v", m["held"])
		}
		wantZero(t, m, "lost", "errors")
	})
	t.Run("auth", func(t *testing.T) {
		t.Parallel()
		addr := startMoonwire(t, "auth")
		m := runJSON(t, append([]string{"-scenario", "handshake", "-url", "ws://" + addr + "/auth",
			"-conns", "2", "-header", "X-Auth-Token: token_123"}, short...)...)
		wantPositive(t, m, "connects")
		wantZero(t, m, "refused", "errors", "close_errors")
		m = runJSON(t, append([]string{"-scenario", "handshake", "-url", "ws://" + addr + "/auth",
			"-conns", "2"}, short...)...)
		wantZero(t, m, "connects", "errors")
		wantPositive(t, m, "refused")
		if by, _ := m["refused_by_status"].(map[string]any); by["http 401"] == nil {
			t.Errorf("refused_by_status %v, want http 401", m["refused_by_status"])
		}
	})
}
