package config

// Console is what [server] says about the browser-side files: the dev
// console at /_console and the JavaScript client at /_moonwire.js.
type Console struct {
	// Enabled serves the dev console (server.console). Default off, and
	// refused on a listen address that is not loopback unless Public: the
	// page lists every route and opens connections to them, a tool for the
	// developer's own machine.
	Enabled bool
	// Public allows the console on a non-loopback listen address
	// (server.console_public); it also lifts the server's check that a
	// console request arrived on a loopback address and named a loopback
	// host.
	Public bool
	// ClientJS serves moonwire.js at /_moonwire.js (server.client_js, or
	// implied by Enabled: the console's users are the client's).
	ClientJS bool
}

// console reads server.console, server.console_public and
// server.client_js; listen is the effective server.listen.
func (l *loader) console(c *Console, r *rawServer, listen string) {
	l.boolean("server.console_public", r.ConsolePublic, &c.Public)
	l.boolean("server.client_js", r.ClientJS, &c.ClientJS)
	if l.boolean("server.console", r.Console, &c.Enabled) && c.Enabled {
		if !loopback(listen) && !c.Public {
			l.errorf("server.console", "refused on %q, which is not a loopback address: the console lists every route and "+
				"opens connections to them; listen on 127.0.0.1, or set server.console_public = true to force it", listen)
		}
		c.ClientJS = true
	}
}
