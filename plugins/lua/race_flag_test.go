//go:build race

package lua_test

// The race detector keeps shadow memory for every heap byte and makes a
// huge copy one long non-preemptible step, so the memory watchdog's tests
// of runaway allocation only mean something without it (.ci/run runs them
// so).
const raceEnabled = true
