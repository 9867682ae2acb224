// Package router is moonwire's core: it accepts sockets, upgrades them to
// WebSocket with gobwas/ws, matches request paths to routes, reads frames,
// queues writes, keeps rooms, runs heartbeats, enforces limits and drains
// on shutdown. It hands every connection event to the route's Handler on
// one of the route's lanes (serial executors) and offers handlers a small
// API: Conn (send, close, attributes, rooms) and Server (broadcast, send by
// id, room queries, stats).
//
// It knows nothing of Lua or TOML: scripting lives in plugins/lua, behind
// Handler, and configuration files in router/config, which cmd/moonwire
// translates into Config.
//
// The read path: idle connections sit in epoll (router/poll) with no
// goroutine and no buffer; a report hands the connection to a worker that
// reads once, decodes every complete frame (router/wsconn), answers control
// frames, and queues data messages on the connection's lane; the read turn
// goes back to the poller when the lane has run them.
//
// The write path: Send and Broadcast append an encoded, immutable frame to
// the connection's bounded queue (a broadcast encodes once for all
// recipients); the first append to an idle queue hands the connection to
// a flush worker, which writes it without waiting, with the other
// connections ready at the same time in one io_uring submission on Linux
// (router/internal/uring); a socket too full to take it all gets a
// goroutine that drains it under a write deadline.
package router
