//go:build linux

package wsconn

import (
	"unsafe"

	"github.com/moonwire/moonwire/router/internal/uring"
)

// QueueOn queues the write Prepare readied on ring r, to socket fd,
// tagged user: a flush worker writes several connections' queues with
// one system call that way. The flusher's buffers stay referenced, and
// must stay unchanged, until r's Submit returns; the caller holds fd open
// until then, and reports the send's result with Wrote.
func (fl *Flusher) QueueOn(r *uring.Ring, fd int, user uint64) error {
	w := &fl.raw
	switch len(w.iov) {
	case 0:
		return r.PrepSend(fd, nil, w.more, user)
	case 1:
		return r.PrepSend(fd, unsafe.Slice(w.iov[0].Base, w.iov[0].Len), w.more, user)
	}
	w.msg.Iov = &w.iov[0]
	w.msg.SetIovlen(len(w.iov))
	return r.PrepSendmsg(fd, &w.msg, w.more, user)
}
