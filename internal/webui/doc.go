// Package webui holds the browser-side files moonwire serves when asked:
// the JavaScript client (moonwire.js, an ES module with no dependencies)
// and the development console's page. They are embedded in the binary so
// that they work offline, with no CDN.
//
// It knows nothing of routes, configuration or WebSocket: the server
// decides whether and where to serve them.
package webui
