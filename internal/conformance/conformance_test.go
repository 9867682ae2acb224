package conformance

import (
	"fmt"
	"io/fs"
	"runtime"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/scripts"
)

// knownBugs maps a case ID to the server bug that makes it fail. Such a
// case still runs; it is skipped with "BUG: ..." while it fails, and fails
// the suite once it passes, so that its entry is removed.
var knownBugs = map[string]string{}

// maxConcurrent bounds the cases in flight (on top of -parallel), so that
// a loaded two-core machine stays comfortable whatever GOMAXPROCS says.
var maxConcurrent = min(4, max(2, runtime.GOMAXPROCS(0)))

// startServer starts a node serving the built-in echo.lua on /echo, with
// limits high enough for the 9.x cases and no heartbeat pings (a ping the
// case did not ask for would be an unexpected event, as for Autobahn).
func startServer(t *testing.T, p profile) *moontest.Server {
	t.Helper()
	echo, err := fs.ReadFile(scripts.FS, "echo.lua")
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`
[server]
max_message_size = "16MiB"
compression = %t

[heartbeat]
interval = "5m"
timeout = "10m"

[scripts]
reload = false

[[routes]]
path = "/echo"
script = "echo.lua"
`, p.compression)
	return moontest.Start(t, moontest.Files(config, "scripts/echo.lua", string(echo)))
}

// TestAutobahn runs every case, each on its own connection, and logs the
// summary: counts by category and outcome, then the cases that pass only
// NON-STRICT or INFORMATIONAL.
func TestAutobahn(t *testing.T) {
	cases := allCases()
	servers := map[string]*moontest.Server{}
	for i := range cases {
		if cases[i].Profile.name == "" {
			cases[i].Profile = plain
		}
		p := cases[i].Profile
		if servers[p.name] == nil {
			servers[p.name] = startServer(t, p)
		}
	}
	sem := make(chan struct{}, maxConcurrent)
	var tl tally
	t.Run("case", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.ID, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				runCase(t, servers[c.Profile.name], c, &tl)
			})
		}
	})
	t.Log(tl.summary())
	for _, l := range tl.details() {
		t.Log(l)
	}
}

// runCase plays one case on a fresh connection and grades it.
func runCase(t *testing.T, srv *moontest.Server, c Case, tl *tally) {
	s, err := dial(srv.Addr(), "/echo", c.Profile)
	if err != nil {
		t.Fatalf("%s: %v", c.ID, err)
	}
	defer s.shutdown()
	c.run(s)
	v := c.grade(s)
	t.Logf("%s [%s] %s: %v", c.ID, c.RFC, c.Desc, v)

	bug, known := knownBugs[c.ID]
	switch {
	case v.passed():
		outcome, note := "ok", ""
		switch v.behavior {
		case gradeNonStrict:
			outcome, note = "non-strict", v.detail
		case gradeInformational:
			outcome, note = "informational", v.detail+"; "+v.closeDetail
		}
		tl.record(c.ID, outcome, note)
		if known {
			t.Errorf("%s passes now; remove it from knownBugs (%s)", c.ID, bug)
		}
	case known:
		tl.record(c.ID, "skipped (bugs)", "")
		t.Skipf("BUG: %s\nobserved: %v", bug, v)
	default:
		tl.record(c.ID, "failed", v.String())
		t.Errorf("%s failed: %s\n%s\nsteps:\n%s", c.ID, c.Desc, v, describeSteps(c))
	}
}

func describeSteps(c Case) string {
	var b []byte
	for i, st := range c.Steps {
		b = fmt.Appendf(b, "  %d. %s\n", i+1, st.desc)
	}
	return string(b)
}
