package moonwire

import (
	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/metrics"
	"github.com/moonwire/moonwire/plugins/store"
	storenats "github.com/moonwire/moonwire/plugins/store/nats"
	storeredis "github.com/moonwire/moonwire/plugins/store/redis"
	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/broker/nats"
	"github.com/moonwire/moonwire/router/broker/redis"
	"github.com/moonwire/moonwire/router/config"
)

// The built-in plugins register as any other plugin does; only the place
// differs (a third party's init is in its own package).
func init() {
	RegisterModule(ModuleInfo{Name: "json", New: func(ModuleContext) (lua.Module, error) {
		return json.New(json.Limits{}), nil
	}})
	RegisterModule(ModuleInfo{Name: "crypto", New: newCryptoModule}) // httpclient.go
	RegisterModule(ModuleInfo{Name: "store", New: func(ctx ModuleContext) (lua.Module, error) {
		b, err := newStore(ctx.Server, ctx.Logger)
		if err != nil {
			return nil, err
		}
		m := &storeModule{Module: store.NewModule(b, storeOptions(ctx.Server))}
		if ms, ok := b.(memoryStore); ok {
			m.mem = ms.mem
		}
		return m, nil
	}})
	RegisterStore(StoreInfo{Name: "memory", New: func(ctx StoreContext) (store.Backend, error) {
		return newMemoryStore(store.New(storeOpts(ctx.Store))), nil
	}})
	RegisterStore(StoreInfo{Name: "redis", New: func(ctx StoreContext) (store.Backend, error) {
		return storeredis.New(storeredis.Options{URL: ctx.Store.URL, Prefix: ctx.Broker.Prefix, Timeout: ctx.Broker.Timeout})
	}})
	RegisterStore(StoreInfo{Name: "nats", New: func(ctx StoreContext) (store.Backend, error) {
		return storenats.New(storenats.Options{URL: ctx.Store.URL, Prefix: ctx.Broker.Prefix, Timeout: ctx.Broker.Timeout})
	}})
	registerHTTP() // httpclient.go
	RegisterModule(ModuleInfo{Name: "metrics", New: func(ctx ModuleContext) (lua.Module, error) {
		return metrics.New(ctx.Metrics, metrics.Options{}), nil
	}})
	RegisterBroker(BrokerInfo{Name: "memory", New: func(BrokerContext) (broker.Broker, error) {
		// One process: the router's own in-memory broker.
		return nil, nil
	}})
	RegisterBroker(BrokerInfo{Name: "redis", New: func(ctx BrokerContext) (broker.Broker, error) {
		return redis.New(brokerOptions(ctx))
	}})
	RegisterBroker(BrokerInfo{Name: "nats", New: func(ctx BrokerContext) (broker.Broker, error) {
		return nats.New(brokerOptions(ctx))
	}})
}

// brokerOptions translates [broker] into a network adapter's terms.
func brokerOptions(ctx BrokerContext) broker.Options {
	b := ctx.Broker
	return broker.Options{URL: b.URL, Prefix: b.Prefix, Timeout: b.Timeout, Outbox: b.Outbox,
		PresenceTTL: b.PresenceTTL, StartDegraded: b.StartDegraded, Logger: ctx.Logger}
}

// storeModule is the shared store over the [store] kind's backend; it
// takes a reload's bounds live.
type storeModule struct {
	*store.Module
	mem *store.Store // the memory backend's store; nil for another kind
}

// Reconfigure implements Reconfigurer: the new bounds apply at the swap.
func (s *storeModule) Reconfigure(ctx ModuleContext) (func(), error) {
	opts := storeOptions(ctx.Server)
	return func() { s.SetLimits(opts) }, nil
}

// memoryStore is the memory backend, which also shows its *store.Store
// (Server.Store).
type memoryStore struct {
	store.Backend
	mem *store.Store
}

func newMemoryStore(s *store.Store) memoryStore { return memoryStore{s.Backend(), s} }

// storeOptions translates [store] into the store's terms.
func storeOptions(cfg *config.Config) store.Options { return storeOpts(cfg.Store) }

func storeOpts(st config.Store) store.Options {
	return store.Options{MaxBytes: st.MaxBytes, MaxKeys: st.MaxKeys, MaxValueBytes: int(st.MaxValueSize)}
}
