// Package cli is the moonwire command line: serve, check, version. The
// moonwire command is a main that calls Main, and so is a custom build
// (see examples/plugin): it imports its plugins for their registration,
// then calls Main, and gets the same flags, signals and output.
//
//	moonwire                      # the embedded default config and scripts
//	moonwire -config FILE         # FILE (TOML); scripts relative to it
//	moonwire check -config FILE   # load and compile everything, report, exit 0/1 (-strict: 1 on warnings)
//	moonwire test -config FILE    # run the scripts folder's *_test.lua files (test.go)
//	moonwire version
//
// It parses flags, loads the configuration, hands it to the moonwire
// package and handles signals; nothing else lives here.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// Version is what moonwire version prints. A build sets it with
// -ldflags "-X github.com/moonwire/moonwire/cli.Version=v1.2.3";
// otherwise the main module's version (or "devel") is reported.
var Version = ""

// Main runs the command line args (without the program name) and returns
// the exit code: SIGINT and SIGTERM drain, SIGHUP reloads.
func Main(args []string) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	return run(args, os.Stdout, os.Stderr, sigs, nil)
}

// run is main without the process: tests give it their own streams and
// signals, and a ready channel that receives the listen address.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal, ready chan<- string) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stdout, stderr, sigs, ready)
	case "check":
		return check(args, stdout, stderr)
	case "test":
		return test(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "moonwire", versionString())
		return 0
	case "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "moonwire: unknown command %q\n", cmd)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  moonwire [-config FILE] [-log-level LEVEL] [-log-format text|json]
  moonwire check [-config FILE] [-strict]
  moonwire test [-config FILE] [-run REGEXP] [-v] [-json] [-timeout D] [PATH...]
  moonwire version

Without -config, moonwire serves its built-in scripts (/echo, /chat,
/chat/{room}, /auth, /monitor) on 127.0.0.1:8765.
`)
}

func versionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// loadConfig loads FILE, or the embedded default when FILE is "".
func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return moonwire.DefaultConfig()
	}
	return config.Load(file)
}

// printProblems prints one line per problem ("file:line: message" for
// scripts, "file: key: message" for the config).
func printProblems(w io.Writer, err error) {
	for _, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		fmt.Fprintln(w, line)
	}
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config file to check (default: the embedded one)")
	strict := fs.Bool("strict", false, "exit 1 on warnings too (for CI)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		printProblems(stdout, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", cfg.File, w)
	}
	problems, lint := moonwire.CheckLint(cfg)
	for _, d := range lint {
		fmt.Fprintln(stdout, d.String())
	}
	for _, err := range problems {
		printProblems(stdout, err)
	}
	if len(problems) > 0 {
		return 1
	}
	if warnings := len(cfg.Warnings) + len(lint); *strict && warnings > 0 {
		fmt.Fprintf(stdout, "%s: %d warning(s), failing (-strict)\n", cfg.File, warnings)
		return 1
	}
	routes := "routes"
	if len(cfg.Routes) == 1 {
		routes = "route"
	}
	fmt.Fprintf(stdout, "%s: ok (%d %s)\n", cfg.File, len(cfg.Routes), routes)
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

func serve(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal, ready chan<- string) int {
	fs := flag.NewFlagSet("moonwire", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config file (default: the embedded one)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	listen := fs.String("listen", "", "serve on `addr` instead of server.listen (several nodes from one config)")
	adminListen := fs.String("admin-listen", "", "serve the admin endpoints on `addr` instead of admin.listen")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to `file` until the server stops (for performance work)")
	fs.Usage = func() {
		usage(stderr)
		fmt.Fprintln(stderr, "\nflags for serving:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "moonwire:", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "moonwire:", err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "moonwire: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintln(stderr, "moonwire:", err)
		return 2
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	n, err := moonwire.New(moonwire.Options{Config: cfg, Logger: log, OwnProcess: true, Version: versionString(), Listen: *listen, AdminListen: *adminListen})
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	if err := n.Start(); err != nil {
		fmt.Fprintln(stderr, "moonwire:", err)
		_ = n.Close()
		return 1
	}
	fmt.Fprintf(stdout, "moonwire %s serving %s (node %s)\n", versionString(), cfg.File, n.Router.NodeID())
	for i, u := range n.URLs() {
		fmt.Fprintf(stdout, "  %-40s %s\n", u, cfg.Routes[i].Script)
	}
	if a := n.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "  admin: http://%s/ (dashboard)  /metrics  /healthz  /routes\n", a)
	}
	if cfg.Scripts.Reload && cfg.Dir != "" {
		fmt.Fprintf(stdout, "  watching %s and %s for changes (SIGHUP reloads too)\n", cfg.File, cfg.Scripts.Dir)
	}
	if ready != nil {
		ready <- n.Addr()
	}
	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if cfg.Scripts.Reload && cfg.Dir != "" {
		if _, err := n.Watch(ctx, moonwire.DefaultDebounce); err != nil {
			log.Warn("not watching files; send SIGHUP to reload", "err", err)
		}
	}
	// SIGHUP reloads run here, not in the signal loop: a reload builds
	// every changed script (each top level may run up to its handler
	// timeout), and a SIGTERM meanwhile must start the drain at once, which
	// then cuts the build short (Engine.StopLoading). One pending reload is
	// enough: it reads the files as they are when it runs.
	reloads := make(chan struct{}, 1)
	defer close(reloads)
	go func() {
		for range reloads {
			_ = n.ReloadBy("signal") // logged either way; the running version keeps serving on error
		}
	}()

	for {
		select {
		case err := <-n.Done():
			if err != nil {
				log.Error("serve failed", "err", err)
				_ = n.Close()
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				select {
				case reloads <- struct{}{}:
				default:
				}
				continue
			}
			stopWatch()
			return drain(n, log, sigs)
		}
	}
}

// drain shuts down gracefully within drain_timeout; a second signal cuts it
// short.
func drain(n *moonwire.Server, log *slog.Logger, sigs <-chan os.Signal) int {
	timeout := n.Config().Server.DrainTimeout
	log.Info("draining", "connections", n.Router.Stats().Connections, "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					log.Warn("second signal: closing now")
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	err := n.Shutdown(ctx)
	switch {
	case errors.Is(err, router.ErrAbandoned):
		// A script (or a module) never returned; the process exits
		// anyway, which is the only way to stop it.
		log.Error("stopped; lanes stuck in a callback were abandoned", "err", err)
		return 1
	case err != nil:
		log.Warn("drain cut short; remaining connections dropped", "err", err)
	}
	log.Info("stopped")
	return 0
}
