//go:build unix

package wsconn

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIovecs is IOV_MAX on Linux and the BSDs.
const maxIovecs = 1024

// rawWriter is one writev(2) on a non-blocking socket, made inside
// syscall.RawConn.Write so the descriptor cannot be closed under it. Its
// iovec array and the bound function are reused: a write allocates
// nothing.
type rawWriter struct {
	iov []unix.Iovec
	n   int
	err error
	fn  func(fd uintptr) bool
}

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
	if len(w.iov) == 0 {
		return true
	}
	r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
	if e != 0 {
		w.err = e
		return true // never wait: the caller decides what a full socket means
	}
	w.n = int(r)
	return true
}

// reset drops references to written buffers.
func (w *rawWriter) reset() {
	clear(w.iov[:cap(w.iov)])
	w.iov = w.iov[:0]
}
