//go:build unix

package wsconn

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIovecs is IOV_MAX on Linux and the BSDs.
const maxIovecs = 1024

// rawWriter is one write on a non-blocking socket, made inside
// syscall.RawConn.Write so the descriptor cannot be closed under it. Its
// iovec array and the bound function are reused: a write allocates
// nothing.
//
// The write is sendto(2) when there is one buffer (a broadcast frame to
// an idle connection: the common case below saturation), writev(2) for
// several. sendto skips the file layer writev goes through (the iovec
// import and the file position lock), and its MSG_NOSIGNAL spares the
// SIGPIPE the Go runtime would otherwise field. A small one is also a raw
// system call, made without telling the scheduler: the socket is
// non-blocking, so the call never sleeps, and the scheduler's bookkeeping
// around a system call (and sysmon's polling of calls in progress) costs
// more than the call itself. Loopback, 66-byte frames, reader on the
// other CPU, wall time per write over 3 runs: writev 4.9-6.6 us, sendto
// 4.6-5.1 us, raw sendto 3.9-4.4 us.
//
// The last write of a connection (see Flusher) carries MSG_MORE,
// several frames then going as one sendmsg(2), writev having no flags.
//
// Several frames stay one writev: copying them into one buffer for a
// sendto made each write cheaper, so the flush workers drained queues
// sooner and coalesced fewer frames per write (28 -> 20 deliveries per
// write at the closed loop, 0.85x deliveries per server-CPU-second).
type rawWriter struct {
	iov []unix.Iovec
	msg unix.Msghdr // iov for a sendmsg (see Flusher.QueueOn)
	// more: the write carries MSG_MORE (see Flusher).
	more bool
	n    int
	err  error
	fn   func(fd uintptr) bool
}

// RawMax is the largest write made as a raw system call: past it,
// holding this goroutine's processor from the scheduler while the kernel
// copies would cost more than the hand-off saves.
const RawMax = 16 << 10

// sendFlags: never wait (the socket is non-blocking anyway) and no
// SIGPIPE on a connection the peer reset.
const sendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL

// prepare points the iovecs at bufs (at most maxIovecs of them) and
// returns the bytes they cover.
func (w *rawWriter) prepare(bufs [][]byte) int {
	if w.fn == nil {
		w.fn = w.writev
	}
	w.iov = w.iov[:0]
	total := 0
	for _, b := range bufs {
		if len(w.iov) == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		w.iov = append(w.iov, v)
		total += len(b)
	}
	return total
}

func (w *rawWriter) writev(fd uintptr) bool {
	w.n, w.err = 0, nil
	var (
		r uintptr
		e unix.Errno
	)
	switch {
	case len(w.iov) == 0:
		return true
	case len(w.iov) > 1 && w.more:
		w.msg.Iov = &w.iov[0]
		w.msg.SetIovlen(len(w.iov))
		r, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.msg)), w.flags())
	case len(w.iov) > 1:
		r, _, e = unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
	case w.iov[0].Len <= RawMax:
		r, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(w.iov[0].Base)), uintptr(w.iov[0].Len), w.flags(), 0, 0)
	default:
		r, _, e = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(w.iov[0].Base)), uintptr(w.iov[0].Len), w.flags(), 0, 0)
	}
	if e != 0 {
		w.err = e
		return true // never wait: the caller decides what a full socket means
	}
	w.n = int(r)
	return true
}

// flags returns the flags of a send.
func (w *rawWriter) flags() uintptr {
	if w.more {
		return sendFlags | msgMore
	}
	return sendFlags
}

// reset drops references to written buffers.
func (w *rawWriter) reset() {
	clear(w.iov[:cap(w.iov)])
	w.iov = w.iov[:0]
	w.msg = unix.Msghdr{}
	w.more = false
}
