package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestAgainstTheTutorialServer runs the client against the tutorial config:
// it reports, gets its heartbeat answered, sees another client's report,
// and stops after its report rounds with a clean close.
func TestAgainstTheTutorialServer(t *testing.T) {
	t.Parallel()
	s := moontest.StartFile(t, "../moonwire.toml")
	other := moontest.Dial(t, s.URL("/monitor"), moontest.DialOptions{Header: http.Header{"X-Monitor-Token": {"monitor_token_2025"}}})

	var out moontest.Logs
	cfg := DefaultConfig()
	cfg.URL = s.URL("/monitor")
	cfg.Report = 150 * time.Millisecond
	cfg.Heartbeat = 100 * time.Millisecond
	cfg.Reports = 4
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), cfg, &out) }()

	moontest.WaitFor(t, "the client to connect", func() bool { return s.Router.RoomSize("monitor") == 2 })
	other.Send("CPU: 1.00%, MEM: 2.00%")
	// The other client sees the Go client's reports, text and binary.
	sawText, sawBinary := false, false
	for !sawText || !sawBinary {
		f := other.Next()
		sawText = sawText || strings.Contains(f.Text(), "] CPU: ")
		sawBinary = sawBinary || strings.Contains(f.Text(), "|")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(moontest.Timeout):
		t.Fatalf("the client did not stop after its reports:\n%s", out.String())
	}
	for _, want := range []string{
		"connected to the monitor server",
		"reported text data: CPU: ",
		"reported binary data: ",
		"heartbeat ok",
		"received monitor broadcast: [127.0.0.1:",
		"closing the connection (code 1000)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestWrongTokenBacksOff: a refused client says why and retries with
// growing delays until told to stop.
func TestWrongTokenBacksOff(t *testing.T) {
	t.Parallel()
	s := moontest.StartFile(t, "../moonwire.toml")
	var out moontest.Logs
	cfg := DefaultConfig()
	cfg.URL = s.URL("/monitor")
	cfg.Token = "wrong"
	cfg.ReconnectMin = 10 * time.Millisecond
	cfg.ReconnectMax = 40 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, &out) }()
	moontest.WaitFor(t, "a few retries", func() bool { return strings.Count(out.String(), "Invalid Monitor Token") >= 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reconnecting in 10ms", "reconnecting in 20ms", "reconnecting in 40ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
