package lua_test

import (
	"log/slog"
	"testing"
	"testing/fstest"
	"time"

	"github.com/moonwire/moonwire/plugins/crypto"
	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/metrics"
	"github.com/moonwire/moonwire/plugins/store"
)

// startErr builds a route from script without serving it, as `moonwire
// check` does, and returns the load error.
func startErr(t *testing.T, script string) (*lua.Route, error) {
	t.Helper()
	st := store.New(store.Options{})
	defer st.Close()
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler), Modules: []lua.Module{json.New(json.Limits{}), crypto.New(crypto.Options{}), st, metrics.New(nil, metrics.Options{})}})
	defer eng.Close()
	r, err := eng.NewRoute(lua.RouteConfig{
		Pattern:        "/t",
		FS:             fstest.MapFS{"t.lua": {Data: []byte(script)}},
		Script:         "t.lua",
		HandlerTimeout: 200 * time.Millisecond,
	})
	if r != nil {
		r.Release()
	}
	return r, err
}
