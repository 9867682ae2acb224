//go:build linux

// Package uring is the least of io_uring(7) that the router's flush
// workers need: a ring on which a batch of non-blocking socket sends is
// submitted with one system call, and their results collected. It knows
// nothing of WebSocket or the router; it is a leaf.
//
// Each send is made with MSG_DONTWAIT, so the kernel completes it while
// io_uring_enter submits it (written, partly written, EAGAIN or an
// error) and never leaves it to a worker thread: by the time Submit
// returns, every send has a completion, and the memory the sends point
// at is no longer read. That is what lets the caller hand the kernel
// addresses of ordinary Go heap memory, which it keeps referenced until
// Submit returns (the collector does not move heap objects).
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes and flags, from include/uapi/linux/io_uring.h.
const (
	opSendmsg = 9
	opSend    = 26

	enterGetEvents = 1 << 0

	offSQRing = 0
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0
)

// sendFlags: never wait (see the package comment) and no SIGPIPE.
const sendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL

// flags returns a send's flags, with MSG_MORE when more is set.
func flags(more bool) uint32 {
	if more {
		return sendFlags | unix.MSG_MORE
	}
	return sendFlags
}

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes), with the fields a send uses.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	pad         uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is one io_uring instance. It is not safe for concurrent use: a
// flush worker owns one.
type Ring struct {
	fd      int
	mem     []byte // the SQ and CQ rings (one mapping)
	sqeMem  []byte
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []cqe

	queued int // prepared since the last Submit
}

// ErrFull is returned by a Prep call when the ring holds as many sends as
// it has entries: Submit first.
var ErrFull = errors.New("uring: submission queue full")

// New sets up a ring for up to entries sends per Submit (a power of two
// is used as is; the kernel rounds others up). It fails where io_uring is
// missing or refused (an old kernel, kernel.io_uring_disabled, a seccomp
// profile): the caller then writes with plain system calls.
func New(entries uint32) (*Ring, error) {
	if unsafe.Sizeof(params{}) != 120 || unsafe.Sizeof(sqe{}) != 64 || unsafe.Sizeof(cqe{}) != 16 {
		panic("uring: struct layout does not match the kernel's")
	}
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("uring: io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 {
		r.Close()
		return nil, errors.New("uring: the kernel lacks IORING_FEAT_SINGLE_MMAP (Linux 5.4)")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	var err error
	r.mem, err = unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("uring: mmap rings: %w", err)
	}
	r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("uring: mmap sqes: %w", err)
	}
	base := unsafe.Pointer(&r.mem[0])
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	return r, nil
}

// Entries returns how many sends one Submit can carry.
func (r *Ring) Entries() int { return len(r.sqes) }

// Close releases the ring. It must not be used afterwards.
func (r *Ring) Close() {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

// next returns the next free submission entry, zeroed, or nil. Every
// entry before the tail is free: Submit returns only once the kernel has
// taken (and completed) all it was given.
func (r *Ring) next() *sqe {
	if r.queued == len(r.sqes) {
		return nil
	}
	tail := atomic.LoadUint32(r.sqTail) + uint32(r.queued)
	i := tail & r.sqMask
	r.sqArray[i] = i
	r.queued++
	s := &r.sqes[i]
	*s = sqe{}
	return s
}

// PrepSend queues a send of b on socket fd, tagged user. b must stay
// referenced, and fd open, until Submit returns. With more set, the send
// carries MSG_MORE: the kernel holds a part-filled segment back for what
// follows (see wsconn.Flusher).
func (r *Ring) PrepSend(fd int, b []byte, more bool, user uint64) error {
	s := r.next()
	if s == nil {
		return ErrFull
	}
	s.opcode, s.fd, s.len, s.msgFlags, s.userData = opSend, int32(fd), uint32(len(b)), flags(more), user
	if len(b) > 0 {
		s.addr = uint64(uintptr(unsafe.Pointer(&b[0])))
	}
	return nil
}

// PrepSendmsg queues a sendmsg of msg (its iovecs) on socket fd, tagged
// user. msg, its iovecs and what they point at must stay referenced, and
// fd open, until Submit returns. more is PrepSend's.
func (r *Ring) PrepSendmsg(fd int, msg *unix.Msghdr, more bool, user uint64) error {
	s := r.next()
	if s == nil {
		return ErrFull
	}
	s.opcode, s.fd, s.len, s.msgFlags, s.userData = opSendmsg, int32(fd), 1, flags(more), user
	s.addr = uint64(uintptr(unsafe.Pointer(msg)))
	return nil
}

// Submit hands the kernel what was prepared and waits for all of it to
// complete (with MSG_DONTWAIT, as it is submitted), then calls fn with
// each send's tag and result: bytes written, or a negated errno. When
// io_uring_enter itself fails, Submit returns its error; the sends it
// had not taken are withdrawn, unsent, and fn is not called for them.
//
// With raw set, io_uring_enter is made without telling the Go scheduler,
// as a raw system call: the scheduler's hand-off around the call costs
// more than the call (see the router's flush workers). It must then be
// short: its sends never wait, and the caller bounds what they copy.
func (r *Ring) Submit(raw bool, fn func(user uint64, res int32)) error {
	n := r.queued
	r.queued = 0
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+uint32(n))
	enter := unix.Syscall6
	if raw {
		enter = unix.RawSyscall6
	}
	submitted, completed := 0, 0
	for completed < n {
		ret, _, errno := enter(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n-submitted), uintptr(n-completed), enterGetEvents, 0, 0)
		if errno == 0 {
			submitted += int(ret)
		} else if errno != unix.EINTR {
			// A failed call took nothing (one that took some reports
			// how many).
			atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)-uint32(n-submitted))
			r.reap(fn)
			return fmt.Errorf("uring: io_uring_enter: %w", errno)
		}
		completed += r.reap(fn)
	}
	return nil
}

// reap calls fn for each completion there is and returns how many.
func (r *Ring) reap(fn func(user uint64, res int32)) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		fn(c.userData, c.res)
		n++
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}
