// Package http is the `http` Lua module: http.request, an outbound HTTP
// request that suspends the calling callback while it is in flight (see
// plugins/internal/suspend), so the callback's lane keeps serving its
// other connections. Requests go through plugins/internal/outbound: the
// [http] allow list, limits and metrics.
package http
