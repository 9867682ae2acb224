package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/scripttest"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router"
)

// test is `moonwire test`: it runs *_test.lua files against fresh servers
// of the config's routes (internal/scripttest) and exits 1 on a failure.
func test(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config whose routes the tests run against (default: the embedded one)")
	run := fs.String("run", "", "run only the tests whose name matches `regexp`")
	verbose := fs.Bool("v", false, "print every test's start, result and t:log output")
	asJSON := fs.Bool("json", false, "print one JSON event per line")
	timeout := fs.Duration("timeout", scripttest.DefaultTimeout, "bound on each test")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	opts := scripttest.Options{Paths: fs.Args(), Verbose: *verbose, JSON: *asJSON, Timeout: *timeout, Out: stdout, Start: startTestServer}
	if *run != "" {
		re, err := regexp.Compile(*run)
		if err != nil {
			fmt.Fprintf(stderr, "moonwire test: -run: %v\n", err)
			return 2
		}
		opts.Run = re
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	opts.Config = cfg
	// The scripts run as under `moonwire` itself, whose gopher-lua array
	// cap this sets for the process; set here, before the runner makes
	// its own Lua states, it is also never changed while they run.
	lua.LimitArrays()
	sum, err := scripttest.Run(opts)
	if err != nil {
		fmt.Fprintf(stderr, "moonwire test: %v\n", err)
		return 1
	}
	if !sum.OK() {
		return 1
	}
	return 0
}

// testServer is a moonwire server started for one Lua test.
type testServer struct{ *moonwire.Server }

func (s testServer) URL(path string) string { return s.Scheme() + "://" + s.Addr() + path }

func (s testServer) HTTPURL(path string) string {
	if s.Scheme() == "wss" {
		return "https://" + s.Addr() + path
	}
	return "http://" + s.Addr() + path
}

// Close drains briefly (on_close runs, as a test author expects), then
// drops what is left.
func (s testServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		return s.Server.Close()
	}
	return nil
}

// startTestServer is the scripttest.StartFunc of the moonwire command.
func startTestServer(f scripttest.Fresh) (scripttest.Server, error) {
	n, err := moonwire.New(moonwire.Options{
		Config: f.Config, Logger: f.Logger, Listen: "127.0.0.1:0",
		// Heartbeats and script timers run on the test's virtual clock.
		Router: func(rc *router.Config) { rc.Clock = f.Clock },
	})
	if err != nil {
		return nil, err
	}
	if len(f.Store) > 0 {
		if n.Store == nil {
			_ = n.Close()
			return nil, errors.New("a test's store needs the memory store")
		}
		for k, v := range f.Store {
			if err := n.Store.Set(k, v, 0); err != nil {
				_ = n.Close()
				return nil, fmt.Errorf("store %q: %w", k, err)
			}
		}
	}
	if err := n.Start(); err != nil {
		_ = n.Close()
		return nil, err
	}
	return testServer{n}, nil
}
