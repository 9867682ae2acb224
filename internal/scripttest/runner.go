package scripttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// DefaultTimeout bounds one test (its function, its subtests and its
// server's start) when Options.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// Server is a server a StartFunc started for one test.
type Server interface {
	// URL returns the ws:// (wss:// with TLS) URL of path.
	URL(path string) string
	// HTTPURL returns the http:// (https://) URL of path.
	HTTPURL(path string) string
	// Close drops every connection and releases the server.
	Close() error
}

// Fresh is what one test's server is made from.
type Fresh struct {
	// Config is the runner's config with the test's settings merged into
	// every route, the broker and store in memory and the admin and API
	// listeners off, so that nothing is shared between tests or with a
	// server already running. The StartFunc must listen on 127.0.0.1:0.
	Config *config.Config
	// Store holds keys to write to the shared store before the test runs.
	Store map[string]any
	// Logger receives the server's log; it is shown with a failure.
	Logger *slog.Logger
	// Clock is the test's virtual clock: the StartFunc must run the
	// server's heartbeats and script timers on it (router.Config.Clock),
	// so that they fire only when the test calls t:advance.
	Clock *router.VirtualClock
}

// StartFunc starts a fresh server, listening, for one test.
type StartFunc func(Fresh) (Server, error)

// Options configure Run.
type Options struct {
	Config *config.Config // the routes under test
	Start  StartFunc      // makes each test's server
	// Paths are *_test.lua files or folders holding them (not recursive);
	// none: the config's scripts folder.
	Paths   []string
	Run     *regexp.Regexp // runs only the tests whose name matches; nil: all
	Verbose bool           // === RUN and --- PASS lines and t:log output for every test
	JSON    bool           // one JSON Event per line instead of text
	Timeout time.Duration  // per test; 0: DefaultTimeout
	Out     io.Writer      // where the report goes
}

// Summary counts what Run saw. Counts are of top-level tests.
type Summary struct {
	Files, Passed, Failed, Skipped int
	Broken                         int // files that did not load
}

// OK reports whether everything that ran passed.
func (s Summary) OK() bool { return s.Failed == 0 && s.Broken == 0 }

// Event is one line of -json output, in the spirit of go test -json:
// Action is "run", "output", "pass", "fail" or "skip" for a test (Test
// set) or a file (Test empty), and "summary" once at the end.
type Event struct {
	Time    time.Time `json:"time"`
	Action  string    `json:"action"`
	File    string    `json:"file,omitempty"`
	Test    string    `json:"test,omitempty"`
	Where   string    `json:"where,omitempty"` // file:line of a failure, skip or log
	Elapsed float64   `json:"elapsed,omitempty"`
	Output  string    `json:"output,omitempty"`
	Passed  *int      `json:"passed,omitempty"`
	Failed  *int      `json:"failed,omitempty"`
	Skipped *int      `json:"skipped,omitempty"`
}

// testFile is one *_test.lua file to run.
type testFile struct {
	name string // as shown: relative to the working folder when possible
	src  []byte
}

// ErrNoTests is returned by Run when it finds no test file.
var ErrNoTests = errors.New("no *_test.lua files")

// maxTestFile bounds a test file's size (it is read whole).
const maxTestFile = 8 << 20

// Run runs the test files and writes what happens to opts.Out. The error
// is about finding the files; test failures are in the Summary.
func Run(opts Options) (Summary, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	files, err := findFiles(opts.Config, opts.Paths)
	if err != nil {
		return Summary{}, err
	}
	if len(files) == 0 {
		return Summary{}, ErrNoTests
	}
	// One goroutine per file, at most one per CPU at a time; each file's
	// output is buffered and printed whole, in order, as go test does
	// per package.
	type result struct {
		out bytes.Buffer
		sum Summary
	}
	results := make([]*result, len(files))
	done := make([]chan struct{}, len(files))
	sem := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, f := range files {
		results[i], done[i] = &result{}, make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			sem <- struct{}{}
			defer func() { <-sem }()
			fr := &fileRun{opts: &opts, file: f, em: emitter{w: &results[i].out, json: opts.JSON, verbose: opts.Verbose, file: f.name}}
			results[i].sum = fr.run()
		}()
	}
	var total Summary
	for i := range files {
		<-done[i]
		_, _ = opts.Out.Write(results[i].out.Bytes())
		s := results[i].sum
		total.Files++
		total.Passed += s.Passed
		total.Failed += s.Failed
		total.Skipped += s.Skipped
		total.Broken += s.Broken
	}
	wg.Wait()
	em := emitter{w: opts.Out, json: opts.JSON}
	if opts.JSON {
		em.event(Event{Action: "summary", Passed: &total.Passed, Failed: &total.Failed, Skipped: &total.Skipped})
	} else {
		line := fmt.Sprintf("%d passed, %d failed, %d skipped", total.Passed, total.Failed, total.Skipped)
		if total.Broken > 0 {
			line += fmt.Sprintf(", %d file(s) did not load", total.Broken)
		}
		fmt.Fprintln(opts.Out, line)
	}
	return total, nil
}

// findFiles lists the test files of paths, or of the config's scripts
// folder (its embedded filesystem for the built-in config).
func findFiles(cfg *config.Config, paths []string) ([]testFile, error) {
	if len(paths) == 0 {
		if cfg.Scripts.Dir == "" {
			return fsFiles(cfg.Scripts.FS, path.Dir(cfg.File))
		}
		paths = []string{cfg.Scripts.Dir}
	}
	var out []testFile
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		names := []string{p}
		if st.IsDir() {
			if names, err = filepath.Glob(filepath.Join(p, "*_test.lua")); err != nil {
				return nil, err
			}
			sort.Strings(names)
		}
		for _, n := range names {
			f, err := readFile(n)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func readFile(name string) (testFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return testFile{}, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxTestFile+1))
	if err != nil {
		return testFile{}, fmt.Errorf("%s: %w", name, err)
	}
	if len(src) > maxTestFile {
		return testFile{}, fmt.Errorf("%s: larger than %d bytes", name, maxTestFile)
	}
	shown := name
	if wd, err := os.Getwd(); err == nil {
		if abs, err := filepath.Abs(name); err == nil {
			if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
				shown = rel
			}
		}
	}
	return testFile{name: filepath.ToSlash(shown), src: src}, nil
}

// fsFiles lists the test files at the top of fsys, shown under prefix.
func fsFiles(fsys fs.FS, prefix string) ([]testFile, error) {
	names, err := fs.Glob(fsys, "*_test.lua")
	if err != nil {
		return nil, err
	}
	var out []testFile
	for _, n := range names {
		src, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		if len(src) > maxTestFile {
			return nil, fmt.Errorf("%s: larger than %d bytes", n, maxTestFile)
		}
		out = append(out, testFile{name: path.Join(prefix, n), src: src})
	}
	return out, nil
}

// emitter writes events as text or JSON lines.
type emitter struct {
	w       io.Writer
	json    bool
	verbose bool
	file    string
}

func (e emitter) event(ev Event) {
	ev.Time = time.Now()
	if ev.File == "" {
		ev.File = e.file
	}
	b, _ := json.Marshal(ev)
	_, _ = e.w.Write(append(b, '\n'))
}

// testRun reports that a test starts.
func (e emitter) testRun(name string) {
	if e.json {
		e.event(Event{Action: "run", Test: name})
	} else if e.verbose {
		fmt.Fprintf(e.w, "=== RUN   %s\n", name)
	}
}

// output reports a test's output (a t:log line, a failure's details).
func (e emitter) output(name, where, text string) {
	if e.json {
		e.event(Event{Action: "output", Test: name, Where: where, Output: text})
		return
	}
	// As go test: "    where: text", continuation lines indented
	// further; text without a place is indented evenly.
	prefix, more := "    ", "    "
	if where != "" {
		prefix, more = "    "+where+": ", "        "
	}
	for i, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if i > 0 {
			prefix = more
		}
		fmt.Fprintf(e.w, "%s%s\n", prefix, l)
	}
}

// result reports how a test ended; where is the failure's or the skip's
// file:line.
func (e emitter) result(name, action, where string, elapsed time.Duration) {
	if e.json {
		if action == "pass" {
			where = "" // the test's declaration: nothing to point at
		}
		e.event(Event{Action: action, Test: name, Where: where, Elapsed: elapsed.Seconds()})
		return
	}
	switch action {
	case "fail":
		fmt.Fprintf(e.w, "--- FAIL: %s (%s)\n", name, where)
	case "skip":
		if e.verbose {
			fmt.Fprintf(e.w, "--- SKIP: %s (%s)\n", name, where)
		}
	case "pass":
		if e.verbose {
			fmt.Fprintf(e.w, "--- PASS: %s (%.2fs)\n", name, elapsed.Seconds())
		}
	}
}

// fileResult reports a file's verdict.
func (e emitter) fileResult(ok bool, elapsed time.Duration, note string) {
	action, word := "pass", "ok  "
	if !ok {
		action, word = "fail", "FAIL"
	}
	if e.json {
		e.event(Event{Action: action, Elapsed: elapsed.Seconds(), Output: note})
		return
	}
	if note != "" {
		note = " [" + note + "]"
	}
	fmt.Fprintf(e.w, "%s %s %.3fs%s\n", word, e.file, elapsed.Seconds(), note)
}
