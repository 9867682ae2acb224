// Package wsconn is the router's WebSocket framing layer on top of
// gobwas/ws: an incremental parser for client frames (so a connection can
// be read a few bytes at a time from epoll, without a goroutine blocked in
// Read), encoded server frames that many connections can share, and the
// bounded per-connection outbound queue with its vectored flush.
//
// gobwas/ws supplies the protocol rules (header checks, close-code
// validation, masking); this package supplies the buffering and ownership
// discipline around them. It knows nothing of routes, scripts or the
// router, and must not import it.
package wsconn
