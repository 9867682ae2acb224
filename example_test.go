package moonwire_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router/config"
)

// Embedding: run moonwire from a config file inside a program of your
// own, and drain it on interrupt.
func ExampleNew() {
	cfg, err := config.Load("moonwire.toml")
	if err != nil {
		log.Fatal(err) // every problem, "file: key: message", one per line
	}
	srv, err := moonwire.New(moonwire.Options{Config: cfg})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-srv.Done():
		log.Fatal(err)
	}
	drain, cancel := context.WithTimeout(context.Background(), cfg.Server.DrainTimeout)
	defer cancel()
	_ = srv.Shutdown(drain)
}

// upper is a Lua module: upper.of(s) returns s in capitals.
type upper struct{}

func (upper) Name() string { return "upper" }

func (upper) Open(L *glua.LState) int {
	t := L.NewTable()
	L.SetField(t, "of", L.NewFunction(func(L *glua.LState) int {
		L.Push(glua.LString(toUpper(L.CheckString(1))))
		return 1
	}))
	L.Push(t)
	return 1
}

func toUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// Registering a module: a plugin package does this in its init, and a
// route enables it with modules = ["upper"] (examples/plugin is a whole
// custom build).
func ExampleRegisterModule() {
	moonwire.RegisterModule(moonwire.ModuleInfo{
		Name:     "upper",
		Optional: true,
		New: func(ctx moonwire.ModuleContext) (lua.Module, error) {
			// [plugins.upper] has no keys: Decode refuses any.
			var none struct{}
			if err := ctx.Config.Decode(&none); err != nil {
				return nil, err
			}
			return upper{}, nil
		},
	})
}
