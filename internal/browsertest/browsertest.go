// Package browsertest drives a real headless Chromium (Debian's
// chromium) from Go tests with chromedp: it starts the browser, runs steps
// with deadlines, and keeps screenshots of what the page showed.
//
// Tests that need a browser skip when chromium is not installed. Every wait
// has a deadline (Wait), generous for a loaded two-core machine: a deadline
// bounds a failure, it does not measure speed.
package browsertest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Wait bounds every step and every wait on a page.
const Wait = 30 * time.Second

// ScreenshotsEnv, set to 1, makes KeepShot copy its screenshot to the
// destination it names (the README's pictures are taken that way, once).
const ScreenshotsEnv = "MOONWIRE_SCREENSHOTS"

// Browser is one headless Chromium that several tests may share, each in
// a tab of its own (Tab): starting a browser is most of a browser test's
// time on a loaded machine. The zero value is ready to use; the browser
// starts on the first Tab. Close it when the tests are done (TestMain).
type Browser struct {
	// Width and Height are the window's size; 0 means 1200x900.
	Width, Height int

	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

// Installed reports whether Debian's chromium is on the PATH.
func Installed() bool {
	_, err := exec.LookPath("chromium")
	return err == nil
}

// Skip skips t when chromium is not installed.
func Skip(t testing.TB) {
	t.Helper()
	if !Installed() {
		t.Skip("chromium is not installed (Debian: apt install chromium): skipping the browser test")
	}
}

// start launches the browser once.
func (b *Browser) start() {
	b.once.Do(func() {
		path, err := exec.LookPath("chromium")
		if err != nil {
			b.err = fmt.Errorf("find chromium: %w", err)
			return
		}
		w, h := b.Width, b.Height
		if w == 0 || h == 0 {
			w, h = 1200, 900
		}
		// chromedp makes the profile folder and removes it once the
		// browser has exited (not t.TempDir: Chromium's helpers may still
		// write to it while a test's cleanup removes it).
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
			append(chromedp.DefaultExecAllocatorOptions[:],
				chromedp.ExecPath(path),
				chromedp.NoSandbox,
				chromedp.DisableGPU,
				chromedp.Flag("disable-background-networking", true),
				chromedp.WindowSize(w, h))...)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		b.cancel = func() { cancelCtx(); cancelAlloc() }
		// The first run starts the browser, which lives as long as ctx:
		// ctx must not have a deadline, so steps get their own.
		if err := chromedp.Do(ctx); err != nil {
			b.err = fmt.Errorf("start chromium: %w", err)
			return
		}
		b.ctx = ctx
	})
}

// Tab opens a new tab of the browser (starting it on first use) for t,
// closed when t ends; it skips t when chromium is not installed.
func (b *Browser) Tab(t testing.TB) context.Context {
	t.Helper()
	Skip(t)
	b.start()
	if b.err != nil {
		t.Fatal(b.err)
	}
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	return ctx
}

// Close ends the browser, if it started, and waits for it to exit.
func (b *Browser) Close() {
	if b.cancel != nil {
		b.cancel()
	}
}

// Chromium starts a headless Chromium of its own for t (1200x900), ended
// when t ends, and returns the context of its first tab. It skips t when
// chromium is not installed. The context has no deadline: run steps with
// Step or a context.WithTimeout of their own.
func Chromium(t testing.TB) context.Context {
	t.Helper()
	Skip(t)
	b := &Browser{}
	t.Cleanup(b.Close)
	b.start()
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.ctx
}

// Step runs actions on ctx's page within Wait. On failure it keeps a
// screenshot of what the page showed (in dir, when dir is not "") and
// ends the test with what it was doing.
func Step(t testing.TB, ctx context.Context, dir, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		if dir != "" {
			Shot(t, ctx, dir, "failed")
		}
		t.Fatalf("%s: %v", what, err)
	}
}

// WaitJS waits, within Wait, until the JavaScript expression expr is
// truthy on ctx's page; on failure like Step.
func WaitJS(t testing.TB, ctx context.Context, dir, what, expr string) {
	t.Helper()
	Step(t, ctx, dir, what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
}

// Run runs an action that gives a value (chromedp.Text, Evaluate, ...)
// on ctx's page within Wait and returns the value; on failure like Step.
func Run[T any](t testing.TB, ctx context.Context, dir, what string, action chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	v, err := chromedp.Run(sctx, action)
	if err != nil {
		if dir != "" {
			Shot(t, ctx, dir, "failed")
		}
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// Eval evaluates expr on ctx's page within Wait and returns its value,
// decoded as T; on failure it ends the test.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	return Run(t, ctx, "", "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// ArtifactsEnv names a folder (MOONWIRE_ARTIFACTS=DIR) where every test
// keeps its screenshots, in DIR/<test name>, passed or failed.
const ArtifactsEnv = "MOONWIRE_ARTIFACTS"

// Screenshots returns the folder for t's screenshots: t.ArtifactDir()
// when the tests run with -artifacts; DIR/<test name> under
// MOONWIRE_ARTIFACTS=DIR; otherwise a temporary folder that is removed
// when t passes and kept, its path logged, when t fails.
func Screenshots(t testing.TB) string {
	t.Helper()
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir()
	}
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	if root := os.Getenv(ArtifactsEnv); root != "" {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("screenshots folder: %v", err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "moonwire-"+name+"-")
	if err != nil {
		t.Fatalf("screenshots folder: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// Shot saves a full-page PNG of ctx's page as dir/NAME.png and returns its
// path ("" when it could not: a screenshot is evidence, and its failure
// is logged rather than ending the test).
func Shot(t testing.TB, ctx context.Context, dir, name string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	// Quality 100 is a lossless PNG (a lower one would be a JPEG).
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	return p
}

// KeepShot is Shot into Screenshots(t) that also copies the PNG to dst
// (a path in the repository, such as docs/screenshots/monitor.png) when
// MOONWIRE_SCREENSHOTS=1: how the README's pictures are made, once, by
// the tests that check what they show.
func KeepShot(t testing.TB, ctx context.Context, name, dst string) {
	t.Helper()
	p := Shot(t, ctx, Screenshots(t), name)
	if p == "" || os.Getenv(ScreenshotsEnv) != "1" {
		return
	}
	if err := copyFile(p, dst); err != nil {
		t.Errorf("keep screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot %s written to %s", name, dst)
}

// copyFile copies src to dst, making dst's folder.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open screenshot: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("make %s: %w", filepath.Dir(dst), err)
	}
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}
