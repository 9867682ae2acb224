//go:build linux

package router

// MovedToNet returns how many sockets Serve accepted without net had to
// move into net since the process started (see acceptedConn).
func MovedToNet() int64 { return movedToNet.Load() }

// ListenerControl runs fn on ln's listening descriptor.
func ListenerControl(ln *Listener, fn func(fd uintptr)) error { return ln.rc.Control(fn) }
