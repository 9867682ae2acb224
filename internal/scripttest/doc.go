// Package scripttest runs a route script author's tests: *_test.lua files
// that declare tests with test("name", function(t) ... end) and drive a
// real moonwire server through real WebSocket clients over loopback
// (`moonwire test`, see scripts/README.md "Testing scripts").
//
// Every test gets a fresh server (rooms, store, timers, VMs), started by
// the caller's StartFunc from the config with the test's overrides; the
// package itself knows nothing of how a server is assembled, so that it
// sits below the moonwire package like the rest of internal/. Test files
// run in their own gopher-lua state (not a route's sandbox), one goroutine
// per file, each test under a deadline.
package scripttest
