// Package poll reports read readiness of many sockets from one goroutine, so
// that an idle WebSocket connection costs a kernel registration instead of a
// parked goroutine and a read buffer.
//
// On Linux it is epoll in edge-triggered mode: a registered socket is
// reported each time data or a hangup arrives, and never re-armed, so a
// read costs no epoll_ctl. Who reads on a report, and what to do with one
// that comes while a read is under way, is the caller's business (the
// router keeps a read turn per connection). Elsewhere New returns
// ErrUnsupported and the router falls back to a goroutine per connection.
//
// FD holds a socket outright, out of the Go runtime's netpoller, for the
// connections the poller reads: net's objects and netpoller descriptor
// cost an idle connection more than everything else together. It is a
// syscall.RawConn that never waits and never closes a descriptor under a
// running call.
//
// It knows file descriptors and tokens, nothing of WebSocket or the router.
// Every operation on a descriptor runs inside syscall.RawConn.Control, so a
// descriptor can never be closed and reused by another connection while it is
// being registered or removed.
package poll

import "errors"

// ErrUnsupported is returned by New where the platform has no poller; the
// caller serves connections with a goroutine each instead.
var ErrUnsupported = errors.New("poll: not supported on this platform")

// ErrClosed is returned by operations on a closed Poller.
var ErrClosed = errors.New("poll: closed")
