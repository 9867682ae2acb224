package wsconn

import "golang.org/x/sys/unix"

// msgMore is MSG_MORE (see Flusher).
const msgMore = unix.MSG_MORE
