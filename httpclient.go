package moonwire

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/plugins/crypto"
	httpmod "github.com/moonwire/moonwire/plugins/http"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router/config"
)

// registerHTTP registers the http module (outbound HTTP from scripts). It
// is optional: it reaches the network, so a route gets it only by listing
// it (modules = ["http"]), and only the hosts of [http] allow.
func registerHTTP() {
	RegisterModule(ModuleInfo{Name: "http", Optional: true, New: func(ctx ModuleContext) (lua.Module, error) {
		c, err := httpmod.NewClient(outboundOptions(ctx.Server.HTTP, ctx.Metrics))
		if err != nil {
			return nil, config.Errors{{File: ctx.Server.File, Key: "http.allow", Msg: err.Error()}}
		}
		return &httpModule{httpmod.New(c)}, nil
	}})
}

// outboundOptions translates [http] into the outbound client's terms.
// Another module that fetches over HTTP (a JWKS source) builds its client
// from the same options, so it obeys the same allow list:
// httpmod.NewClient(outboundOptions(ctx.Server.HTTP, ctx.Metrics)).HTTPClient().
func outboundOptions(h config.HTTPClient, reg prometheus.Registerer) httpmod.Options {
	return httpmod.Options{Allow: h.Allow, Timeout: h.Timeout, MaxResponse: h.MaxResponse,
		MaxRequestBody: h.MaxRequestBody, Concurrency: h.Concurrency, PerHost: h.PerHost, Metrics: reg}
}

// httpModule is the http module; it takes a reload's [http] live.
type httpModule struct{ *httpmod.Module }

// Reconfigure implements Reconfigurer: requests made after the swap obey
// the new [http]; those in flight finish under the old.
func (m *httpModule) Reconfigure(ctx ModuleContext) (func(), error) {
	return m.Client().Reconfigure(outboundOptions(ctx.Server.HTTP, ctx.Metrics))
}

// cryptoModule is the crypto module whose key sets (crypto.jwks) are
// fetched through a client of the same [http] allow list as the http
// module's: a script reaches an identity provider only if the operator
// listed it.
type cryptoModule struct {
	*crypto.Module
	client *httpmod.Client
}

func newCryptoModule(ctx ModuleContext) (lua.Module, error) {
	c, err := httpmod.NewClient(outboundOptions(ctx.Server.HTTP, ctx.Metrics))
	if err != nil {
		return nil, config.Errors{{File: ctx.Server.File, Key: "http.allow", Msg: err.Error()}}
	}
	m := crypto.New(crypto.Options{HTTPClient: c.HTTPClient(), Logger: ctx.Logger})
	return &cryptoModule{Module: m, client: c}, nil
}

// Reconfigure implements Reconfigurer: key set fetches after the swap
// obey the new [http].
func (m *cryptoModule) Reconfigure(ctx ModuleContext) (func(), error) {
	return m.client.Reconfigure(outboundOptions(ctx.Server.HTTP, ctx.Metrics))
}

var _ lua.SuspendingModule = (*httpModule)(nil)
