package moonwire_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/router/config"
)

// countingStore is a third party's store backend: the memory store with
// every incr counted. It registers as any plugin would.
type countingStore struct{ store.Backend }

var countedIncrs atomic.Int64

func (c countingStore) Incr(k string, n float64, ttl time.Duration) (float64, error) {
	countedIncrs.Add(1)
	return c.Backend.Incr(k, n, ttl)
}

func init() {
	moonwire.RegisterStore(moonwire.StoreInfo{Name: "counting", New: func(ctx moonwire.StoreContext) (store.Backend, error) {
		return countingStore{store.New(store.Options{MaxValueBytes: int(ctx.Store.MaxValueSize)}).Backend()}, nil
	}})
}

func TestRegisteredStoreBackend(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[store]
kind = "counting"

[[routes]]
path = "/c"
script = "c.lua"
`, "scripts/c.lua", `return { on_message = function(conn) conn:send(tostring(store.incr("n"))) end }`))
	c := moontest.Dial(t, s.URL("/c"))
	before := countedIncrs.Load()
	c.Send("x")
	c.Expect("1")
	c.Send("x")
	c.Expect("2")
	if got := countedIncrs.Load() - before; got != 2 {
		t.Fatalf("the backend saw %d incr, want 2", got)
	}
	if s.Store != nil {
		t.Fatal("Server.Store is the memory store's, not a plugin's")
	}

}

func TestUnknownStoreKind(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"moonwire.toml": "[store]\nkind = \"nope\"\n\n[[routes]]\npath = \"/c\"\nscript = \"c.lua\"\n",
		"scripts/c.lua": "return {}\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, "moonwire.toml"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = moonwire.New(moonwire.Options{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), `store.kind: no store "nope" is registered in this build (registered: counting, memory, nats, redis)`) {
		t.Fatalf("got %v", err)
	}
}
