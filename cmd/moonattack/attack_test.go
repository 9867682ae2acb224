//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// startServer serves testdata/, with moonwire's own echo.lua and
// chat.lua, in-process on 127.0.0.1:0, with the
// plain-HTTP deadline (handshake_timeout) cut to 300ms so that slowbody
// sees the server close within the test.
func startServer(t *testing.T) *moontest.Server {
	t.Helper()
	files := map[string]string{}
	for name, from := range map[string]string{
		"moonwire.toml":     "testdata/moonwire.toml",
		"static/index.html": "testdata/static/index.html",
		"chat.lua":          "../../scripts/chat.lua",
		"echo.lua":          "../../scripts/echo.lua",
	} {
		b, err := os.ReadFile(filepath.FromSlash(from))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	cfg := files["moonwire.toml"]
	if !strings.Contains(cfg, "[server]\n") {
		t.Fatal("testdata/moonwire.toml: no [server] table")
	}
	files["moonwire.toml"] = strings.Replace(cfg, "[server]\n", "[server]\nhandshake_timeout = \"300ms\"\n", 1)
	return moontest.Start(t, files)
}

// attack runs moonattack with args against this process (-pid) and
// returns its JSON line.
func attack(t *testing.T, args ...string) result {
	t.Helper()
	var out, errs bytes.Buffer
	args = append(args, "-pid", strconv.Itoa(os.Getpid()), "-settle", "50ms", "-peek-time", "300ms", "-dial-timeout", "5s")
	if code := run(args, &out, &errs); code != 0 {
		t.Fatalf("moonattack %v: exit %d: %s", args, code, errs.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("JSON line: %v\n%s", err, out.String())
	}
	if len(lines) < 5 {
		t.Errorf("want a table before the JSON line:\n%s", out.String())
	}
	t.Logf("%s", out.String())
	checkServer(t, &r)
	return r
}

// checkServer checks the figures sampled from /proc.
func checkServer(t *testing.T, r *result) {
	t.Helper()
	s := r.ServerFigures
	switch {
	case s == nil:
		t.Fatal("no server figures")
	case s.SampleErr != "" || s.Exited:
		t.Errorf("sampling: exited %v, %s", s.Exited, s.SampleErr)
	case s.Samples < 2:
		t.Errorf("%d samples", s.Samples)
	case s.RSSBefore < 1<<20 || s.RSSPeak < s.RSSBefore || s.HWM < s.RSSPeak || s.RSSAfter <= 0:
		t.Errorf("RSS before %d, peak %d, VmHWM %d, after %d", s.RSSBefore, s.RSSPeak, s.HWM, s.RSSAfter)
	case s.FDsBefore < 3 || s.FDsPeak < s.FDsBefore || s.FDsAfter <= 0:
		t.Errorf("fds before %d, peak %d, after %d", s.FDsBefore, s.FDsPeak, s.FDsAfter)
	}
	if r.Opened != r.Conns || len(r.DialErrors) > 0 {
		t.Errorf("opened %d of %d, dial errors %v", r.Opened, r.Conns, r.DialErrors)
	}
}

// Each attack, for a fraction of a second, against moonwire in this
// process, reports what it sent and sensible server figures.
func TestAttacks(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		lines []string
	)
	keep := func(r result) {
		b, _ := json.Marshal(r)
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, string(b))
	}
	t.Run("group", func(t *testing.T) {
		t.Run("pingflood", func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			r := attack(t, "-attack", "pingflood", "-url", s.URL("/echo"), "-conns", "2", "-duration", "400ms")
			if r.Pings < 1000 || r.PingsPerS <= 0 {
				t.Errorf("pings %d (%v/s)", r.Pings, r.PingsPerS)
			}
			if sum(r.Ends) != 2 {
				t.Errorf("ends %v", r.Ends)
			}
			keep(r)
		})
		t.Run("inflate", func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			// Seconds, not a fraction: the 1 MiB plain frame each
			// connection sends first must reach a server running under
			// -race on a loaded machine before the attack's end (it once
			// took more than 0.5 s there, and nothing was sent).
			r := attack(t, "-attack", "inflate", "-url", s.URL("/echo"), "-conns", "2", "-frames", "50", "-duration", "3s")
			if r.Negotiated != 2 || r.BigFrames != 2 || r.DeflatedFrames < 1 || r.DeflatedFrames > 100 {
				t.Errorf("negotiated %d, plain frames %d, compressed frames %d", r.Negotiated, r.BigFrames, r.DeflatedFrames)
			}
			if r.InflatesTo != 1<<20-1024 || r.DeflatedFrameBytes < 100 || r.DeflatedFrameBytes > 4096 {
				t.Errorf("a compressed frame of %d bytes inflating to %d", r.DeflatedFrameBytes, r.InflatesTo)
			}
			keep(r)
		})
		t.Run("slowbody", func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			// A body under the server's 64 KiB cap: the answer is 408
			// when the 300ms deadline passes.
			r := attack(t, "-attack", "slowbody", "-url", s.URL("/x"), "-conns", "40", "-body-len", "1000",
				"-trickle", "50ms", "-duration", "3s")
			if r.ServerClosed != 40 || r.StatusLines["HTTP/1.1 408 Request Timeout"] != 40 {
				t.Errorf("server closed %d, status lines %v, ends %v", r.ServerClosed, r.StatusLines, r.Ends)
			}
			if len(r.ClosedAfterS) != 3 || r.ClosedAfterS[0] < 0.25 {
				t.Errorf("closed after %v s, want the 300ms deadline", r.ClosedAfterS)
			}
			if r.BodyBytes < 1 || r.ServerFigures.FDsPeak < r.ServerFigures.FDsBefore+40 {
				t.Errorf("body bytes %d; fds peak %d, before %d", r.BodyBytes, r.ServerFigures.FDsPeak, r.ServerFigures.FDsBefore)
			}
			keep(r)
		})
		t.Run("chatstore", func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			r := attack(t, "-attack", "chatstore", "-url", s.URL("/chat"), "-conns", "4", "-msgs", "5", "-size", "100000", "-duration", "5s")
			if r.Messages != 20 || r.MessageBytes != 2_000_000 {
				t.Errorf("messages %d, %d bytes", r.Messages, r.MessageBytes)
			}
			// Each connection hears its own join, then the server's close.
			if r.Ends["close 1000"] != 4 || r.FramesIn != 8 {
				t.Errorf("ends %v, frames in %d", r.Ends, r.FramesIn)
			}
			keep(r)
		})
	})
	if t.Failed() {
		return
	}
	var out bytes.Buffer
	if err := printTableFrom(strings.NewReader(strings.Join(lines, "\n")), &out); err != nil {
		t.Fatal(err)
	}
	if rows := strings.Count(out.String(), "\n"); rows != 2+4 {
		t.Errorf("table of %d lines, want a head and 4 rows:\n%s", rows, out.String())
	}
}

// Bad flags are refused before anything is dialed.
func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-attack", "nope"},
		{"-attack", "pingflood", "-conns", "0"},
		{"-attack", "slowbody", "-body-len", "1"},
		{"-attack", "inflate", "-url", "wss://example.com/"},
		{"-attack", "inflate", "-max-message", "12 parsecs"},
	} {
		var out, errs bytes.Buffer
		if code := run(args, &out, &errs); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs.String())
		}
	}
	var b byteSize
	if err := b.Set("1MiB"); err != nil || b != 1<<20 {
		t.Errorf("1MiB: %d, %v", b, err)
	}
}
