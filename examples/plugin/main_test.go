package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestCustomBuild builds this folder as a binary, as a user would, checks
// and serves its config, greets over a real socket, and drains on SIGTERM.
func TestCustomBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "moonwire-greet")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The config as shipped, on a free port.
	text, err := os.ReadFile("moonwire.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "moonwire.toml")
	write := func(s string) {
		if err := os.WriteFile(cfgFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	abs, _ := filepath.Abs("scripts")
	write(strings.Replace(string(text), `listen = "127.0.0.1:8765"`, `listen = "127.0.0.1:0"`, 1) + "\n[scripts]\ndir = \"" + abs + "\"\n")

	if out, err := exec.CommandContext(ctx, bin, "check", "-config", cfgFile).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok (2 routes)") {
		t.Fatalf("check: %v\n%s", err, out)
	}

	// The plugin's own validation, through moonwire check.
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(text), `greeting = "Hello"`, `greeting = 7`, 1)+"\n[scripts]\ndir = \""+abs+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin, "check", "-config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+":9: plugins.greet.greeting: incompatible types") {
		t.Fatalf("check of a wrong greeting: %v\n%s", err, out)
	}

	cmd := exec.CommandContext(ctx, bin, "-config", cfgFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	urls := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && strings.HasPrefix(f[0], "ws://") {
				urls <- f[0]
			}
		}
	}()
	var hello, echo string
	for hello == "" || echo == "" {
		select {
		case u := <-urls:
			if strings.HasSuffix(u, "/hello") {
				hello = u
			} else {
				echo = u
			}
		case <-time.After(moontest.Timeout):
			t.Fatalf("no URLs printed; stderr:\n%s", stderr.String())
		}
	}
	c := moontest.Dial(t, hello)
	c.Send("Ada")
	c.Expect("Hello, Ada!")
	c.Send(strings.Repeat("x", 33))
	c.Expect("error: name too long")
	e := moontest.Dial(t, echo)
	e.Expect("greet is nil")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}
