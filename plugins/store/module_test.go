package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/storetest"
)

// failing is a Backend whose every call fails as a network might, with an
// error that does not say whose it is.
type failing struct {
	limits store.Options
	closed int
}

var errDown = errors.New("connection refused")

func (f *failing) Get(string) (any, bool, error)                        { return nil, false, errDown }
func (f *failing) Set(string, any, time.Duration) error                 { return errDown }
func (f *failing) Incr(string, float64, time.Duration) (float64, error) { return 0, errDown }
func (f *failing) Push(string, any, int, time.Duration) (int, error) {
	return 0, fmt.Errorf("store: nats: push: %w", errDown)
}
func (f *failing) CompareAndSet(string, any, any, time.Duration) (bool, error) { return false, errDown }
func (f *failing) Delete(string) (bool, error)                                 { return false, errDown }
func (f *failing) Keys(string) ([]string, error)                               { return nil, errDown }
func (f *failing) SetLimits(o store.Options)                                   { f.limits = o }
func (f *failing) Close() error                                                { f.closed++; return nil }

// TestModuleErrors: a failure the backend reports reaches the script as
// nil and a "store: " string, from every function, and raises nowhere.
func TestModuleErrors(t *testing.T) {
	t.Parallel()
	f := &failing{}
	m := store.NewModule(f, store.Options{MaxValueBytes: 100})
	if f.limits.MaxValueBytes != 100 {
		t.Fatalf("NewModule did not pass the limits on: %+v", f.limits)
	}
	L := storetest.NewState(t, m, func(time.Duration) {})
	luatest.Run(t, L, storetest.Prelude, `
		fails("store: connection refused", store.get("k"))
		fails("store: connection refused", store.set("k", 1))
		fails("store: connection refused", store.set("k", nil))
		fails("store: connection refused", store.incr("k"))
		fails("store: nats: push: connection refused", store.push("k", 1, 5))
		fails("store: connection refused", store.cas("k", nil, 1))
		fails("store: connection refused", store.delete("k"))
		fails("store: connection refused", store.keys())
		-- the module's own checks come first
		fails("store: value too large", store.set("k", string.rep("x", 100)))
		raises("ttl must be a non-negative number", store.set, "k", 1, -1)`)
	m.SetLimits(store.Options{MaxValueBytes: 7})
	if f.limits.MaxValueBytes != 7 || m.Name() != "store" || m.Backend() != store.Backend(f) {
		t.Fatalf("SetLimits: %+v", f.limits)
	}
	if err := m.Close(); err != nil || f.closed != 1 {
		t.Fatalf("Close: %v, %d", err, f.closed)
	}
}

const prelude = luatest.Asserts + `local store = require "store"
`

// TestModuleOverMemory: the module over Store.Backend() is the store the
// Store's own Open gives; limits set through either reach both.
func TestModuleOverMemory(t *testing.T) {
	t.Parallel()
	s := store.New(store.Options{})
	m := store.NewModule(s.Backend(), store.Options{MaxKeys: 1, MaxValueBytes: 16})
	a := luatest.NewState(t, m)
	b := luatest.NewState(t, s)
	luatest.Run(t, a, prelude, `
		eq(store.set("k", "v"), true)
		fails("store: too many keys", store.set("other", 1))
		fails("store: value too large", store.set("k", string.rep("x", 16)))`)
	luatest.Run(t, b, prelude, `eq(store.get("k"), "v")`)
	s.SetLimits(store.Options{})
	luatest.Run(t, b, prelude, `eq(store.set("other", string.rep("x", 16)), true)`)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Get("other"); !ok || v != "xxxxxxxxxxxxxxxx" {
		t.Fatalf("after Close the data stays usable: %v, %v", v, ok)
	}
}
