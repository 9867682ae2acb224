//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/cmd/internal/toolflag"
	"github.com/moonwire/moonwire/cmd/moonbench/baseline"
)

// serveBaselineCmd is the hidden subcommand -baseline starts as a child:
//
//	moonbench serve-baseline -addr 127.0.0.1:0 -kind echo|chat [-bufio]
//
// It prints "listening ADDR" on its first line of output and serves until
// SIGINT or SIGTERM.
const serveBaselineCmd = "serve-baseline"

func serveBaseline(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(serveBaselineCmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	kindS := fs.String("kind", "echo", "echo or chat")
	buffered := fs.Bool("bufio", false, "bufio reader and writer per connection")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	kind, err := baseline.ParseKind(*kindS)
	if err != nil {
		fmt.Fprintln(stderr, "moonbench serve-baseline:", err)
		return 2
	}
	if _, err := toolflag.RaiseFDLimit(); err != nil {
		fmt.Fprintln(stderr, "moonbench serve-baseline: RLIMIT_NOFILE:", err)
	}
	srv, err := baseline.Listen(*addr, kind, baseline.Options{Buffered: *buffered})
	if err != nil {
		fmt.Fprintln(stderr, "moonbench serve-baseline:", err)
		return 1
	}
	for srv.Addr() == nil {
		time.Sleep(time.Millisecond)
	}
	fmt.Fprintf(stdout, "listening %s\n", srv.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = srv.Close()
	return 0
}

// baselineChild is a running serve-baseline process.
type baselineChild struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startBaselineChild starts the baseline server for the scenario as a child
// process, and points cfg's URL (its path kept) and pid at it.
func startBaselineChild(ctx context.Context, cfg *config) (*baselineChild, error) {
	kind := "echo"
	if cfg.scenario == "broadcast" {
		kind = "chat"
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{serveBaselineCmd, "-addr", "127.0.0.1:0", "-kind", kind}
	if cfg.baselineBufio {
		args = append(args, "-bufio")
		kind += "+bufio"
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	// If moonbench dies (a signal, a closed stdout), the server goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &baselineChild{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	var addr string
	select {
	case l, ok := <-line:
		addr, _ = strings.CutPrefix(l, "listening ")
		if !ok || addr == l {
			c.stop()
			return nil, errors.New("baseline server did not start")
		}
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, errors.New("baseline server did not start in 10s")
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	u, err := url.Parse(cfg.url)
	if err != nil {
		c.stop()
		return nil, err
	}
	u.Scheme = "ws"
	u.Host = addr
	cfg.url = u.String()
	cfg.urls = []string{cfg.url}
	cfg.pids = pidList{cmd.Process.Pid}
	cfg.baselineKind = kind
	return c, nil
}

// stop ends the child: SIGTERM, then SIGKILL after 5s.
func (c *baselineChild) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
