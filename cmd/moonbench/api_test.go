//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/moonwire/moonwire"
	mwconfig "github.com/moonwire/moonwire/router/config"
)

// TestAPIPublish runs api-publish, small, against testdata/api.toml served
// in-process (both listeners on free ports): every message reaches every
// subscriber, and a wrong key fails the run at once.
func TestAPIPublish(t *testing.T) {
	t.Parallel()
	cfg, err := mwconfig.Load(filepath.Join("testdata", "api.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Listen = "127.0.0.1:0"
	n, err := moonwire.New(moonwire.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		n.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	args := append([]string{"-url", "ws://" + n.Addr() + "/room", "-api", "http://" + n.APIAddr(),
		"-subs", "10", "-pubs", "2"}, short...)
	o, err := parseAPIFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res, err := runAPIPublish(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := report(&out, res, true); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	wantPositive(t, m, "requests", "requests_per_s", "deliveries", "expected")
	wantZero(t, m, "lost", "gaps", "out_of_order", "request_errors", "errors", "mismatches", "protocol_errors", "unexpected_messages")
	if m["expected"] != m["delivered"] {
		t.Errorf("expected %v, delivered %v", m["expected"], m["delivered"])
	}

	o, _ = parseAPIFlags(append(args, "-key", "wrong-key-0123456789abcdef"), io.Discard)
	if _, err := runAPIPublish(context.Background(), o); err == nil || !bytes.Contains([]byte(err.Error()), []byte("HTTP 401")) {
		t.Errorf("a wrong key: %v, want HTTP 401", err)
	}
}
