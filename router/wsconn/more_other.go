//go:build unix && !linux

package wsconn

// msgMore is 0 where sends have no MSG_MORE: the last write goes out on
// its own, and the FIN after it.
const msgMore = 0
