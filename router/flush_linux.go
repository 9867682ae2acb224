//go:build linux

package router

import (
	"net"
	"syscall"

	"github.com/moonwire/moonwire/router/internal/uring"
	"github.com/moonwire/moonwire/router/poll"
	"github.com/moonwire/moonwire/router/wsconn"
)

// flushBatch is how many connections a flush worker writes with one
// system call: a broadcast makes that many ready at once.
const flushBatch = 64

// flushSlot is a connection a batched flush worker is writing.
type flushSlot struct {
	c      *Conn
	fl     *wsconn.Flusher
	fd     *poll.FD // nil: net holds the socket
	sealed bool
	state  slotState
	res    int32 // the send's result, once on the ring
}

// slotState is where a slot's write stands within a round.
type slotState uint8

const (
	slotDone   slotState = iota // the queue is empty: the flush is over
	slotRaw                     // to write with a system call of its own
	slotClosed                  // the socket was closed under the flush
	slotQueued                  // on the ring
)

// flushRing returns a ring for a flush worker, or nil where the kernel
// has no io_uring or refuses it (an old kernel, kernel.io_uring_disabled,
// a container's seccomp profile), and with Config.NoRing: the worker then
// writes each connection with a system call of its own.
func (s *Server) flushRing() *uring.Ring {
	if s.static.NoRing {
		return nil
	}
	ring, err := uring.New(flushBatch)
	if err != nil {
		s.ringOnce.Do(func() {
			s.log.Info("flush workers write with a system call per connection", "reason", err.Error())
		})
		return nil
	}
	return ring
}

// flushBatched runs a flush worker on ring, on which it writes every
// connection that is ready at the same time with one system call, where
// the plain worker makes one each. It closes the ring when the flush
// queue closes.
//
// A socket takes a send there as it takes a raw one: MSG_DONTWAIT, so a
// full socket answers EAGAIN, and the connection goes to a goroutine of
// its own that waits under the write timeout, as with the plain worker.
func (s *Server) flushBatched(ring *uring.Ring) {
	defer ring.Close()
	slots := make([]flushSlot, 0, flushBatch)
	open := true
	for open || len(slots) > 0 {
		// Take what is ready: wait for the first when idle, then as many
		// more as there are without waiting.
		if len(slots) == 0 {
			c, ok := <-s.flushq
			if !ok {
				return
			}
			slots = addSlot(slots, c)
		}
	fill:
		for open && len(slots) < flushBatch {
			select {
			case c, ok := <-s.flushq:
				if !ok {
					open = false
					break fill
				}
				slots = addSlot(slots, c)
			default:
				break fill
			}
		}
		slots = s.flushRound(ring, slots)
	}
}

func addSlot(slots []flushSlot, c *Conn) []flushSlot {
	return append(slots, flushSlot{c: c, fl: flushers.Get().(*wsconn.Flusher), fd: c.owned()})
}

// flushRound makes one write on every slot's socket and returns the
// slots still to write: those whose socket took all it was given, which
// may have more queued since. Two or more sockets the router holds are
// written on the ring; a lone one, as the plain worker writes it (a raw
// sendto costs less than a ring's entry).
func (s *Server) flushRound(ring *uring.Ring, slots []flushSlot) []flushSlot {
	owned := 0
	for i := range slots {
		sl := &slots[i]
		var done bool
		if sl.sealed, done = sl.fl.Prepare(&sl.c.queue); done {
			sl.state = slotDone
			continue
		}
		sl.state = slotRaw
		if sl.fd != nil {
			owned++
		}
	}
	if owned > 1 {
		s.submitRound(ring, slots)
	}
	kept := slots[:0]
	for i := range slots {
		sl := slots[i]
		var n int
		var werr error
		switch sl.state {
		case slotDone:
			s.endFlush(sl, nil)
			continue
		case slotQueued:
			if sl.res < 0 {
				werr = syscall.Errno(-sl.res)
			} else {
				n = int(sl.res)
			}
		case slotClosed:
			werr = net.ErrClosed
		case slotRaw:
			n, werr = sl.fl.WriteRaw(sl.c.rc())
		}
		sl.c.bytesOut.Add(int64(n))
		sl.c.route.bytesOut.Add(int64(n))
		switch blocked, err := sl.fl.Wrote(&sl.c.queue, n, werr); {
		case err != nil:
			s.endFlush(sl, err)
		case blocked:
			s.wg.Add(1)
			go sl.c.flush(sl.fl)
		default:
			kept = append(kept, sl)
		}
	}
	clear(slots[len(kept):])
	return kept
}

// submitRound writes the round's slots whose socket the router holds
// with one io_uring_enter. A slot the ring did not complete (the call
// failed) stays slotRaw, for a write of its own.
func (s *Server) submitRound(ring *uring.Ring, slots []flushSlot) {
	bytes := 0
	for i := range slots {
		sl := &slots[i]
		if sl.state != slotRaw || sl.fd == nil {
			continue
		}
		fd, ok := sl.fd.Acquire()
		if !ok {
			sl.state = slotClosed
			continue
		}
		if err := sl.fl.QueueOn(ring, fd, uint64(i)); err != nil {
			sl.fd.Release() // cannot happen: the ring has an entry per slot
			continue
		}
		sl.state = slotQueued
		sl.res = notSent
		bytes += sl.fl.Readied()
	}
	// The batch is submitted with a raw system call, as the plain
	// worker's small writes are made: the scheduler's hand-off around
	// the call cost more than the call. Handshakes, whose close frames
	// made small batches, had 45% more context switches and cost 1.23x
	// the CPU with every batch handed off (moonbench ab, handshake-lua).
	// Under echo's load a call of 30-60 sends outlasted sysmon's 20 µs
	// tick: sysmon took the processor from the call, started a thread
	// for it, and the call came back to find its processor gone, about
	// 8% of the server's CPU in all (sysmon, handoffp, stopm). Only a
	// batch that copies much is left to the scheduler, so a processor is
	// never held through a long copy.
	raw := bytes <= rawBytes
	err := ring.Submit(raw, func(user uint64, res int32) { slots[user].res = res })
	for i := range slots {
		sl := &slots[i]
		if sl.state != slotQueued {
			continue
		}
		sl.fd.Release()
		if sl.res == notSent {
			sl.state = slotRaw
		}
	}
	if err != nil {
		s.log.Warn("flush: a batch of writes failed on the ring; they are made one by one", "error", err.Error())
	}
}

// rawBytes bounds the bytes of a batch submitted as a raw system call:
// 64 sends of echo's replies or of a 1 KiB broadcast.
const rawBytes = 4 * wsconn.RawMax

// notSent marks a send on the ring that did not complete.
const notSent = -1 << 31

// endFlush ends a slot's flush: its flusher goes back to the pool, and
// the connection hears how the flush ended.
func (s *Server) endFlush(sl flushSlot, err error) {
	sl.fl.Reset()
	flushers.Put(sl.fl)
	sl.c.flushed(sl.sealed, err)
}
