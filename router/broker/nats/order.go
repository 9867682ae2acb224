package nats

import (
	"slices"
	"time"

	"github.com/moonwire/moonwire/router/broker"
)

// reorderWindow is how long a broadcast with history waits for the ones
// before it. The stream stores a room's appends in offset order, but
// nats-server (2.9) republishes appends made by different connections from
// their own goroutines, so two close appends can reach a watcher swapped
// (by microseconds, as measured). A broadcast that is still missing after
// the window was lost to this node (its subscription came later, the
// connection dropped, the node did not keep up): the ones after it go on,
// in order, and the history still has it.
const reorderWindow = 100 * time.Millisecond

// reorder turns the broadcasts with history a node receives into each
// room's offset order, without repeats. It is used by the receive
// goroutine only.
type reorder struct {
	rooms   map[string]*roomOrder
	waiting map[string]*roomOrder // rooms holding broadcasts
}

type roomOrder struct {
	epoch   string
	next    uint64 // the next offset to deliver; 0: not known yet
	held    map[uint64]broker.Message
	since   time.Time // when the current wait began
	retired []string  // epochs the room moved on from, newest last
}

// maxRetired bounds the epochs remembered per room, to refuse late
// broadcasts of an epoch the room moved on from.
const maxRetired = 4

// add takes m (Offset != 0; its Data must stay valid while held) and
// hands out, in order, what can be delivered now. want is the rooms
// watched: the others' state is forgotten once there is much of it.
func (o *reorder) add(m broker.Message, now time.Time, out func(broker.Message), want *broker.Interest) {
	if o.rooms == nil {
		o.rooms = make(map[string]*roomOrder)
		o.waiting = make(map[string]*roomOrder)
	}
	r := o.rooms[m.Room]
	if r == nil {
		if len(o.rooms) >= 1024 && len(o.rooms) >= 2*want.Len() {
			for name, x := range o.rooms {
				if len(x.held) == 0 && !want.Has(name) {
					delete(o.rooms, name)
				}
			}
		}
		r = &roomOrder{epoch: m.Epoch}
		o.rooms[m.Room] = r
	}
	if m.Epoch != r.epoch {
		if slices.Contains(r.retired, m.Epoch) {
			return // late, from an epoch that is over
		}
		// A new epoch: the old one is over, what it holds goes first.
		o.release(m.Room, r, out, true)
		if r.retired = append(r.retired, r.epoch); len(r.retired) > maxRetired {
			r.retired = r.retired[1:]
		}
		r.epoch, r.next = m.Epoch, 0
	}
	if r.next == 0 && m.Offset == 1 {
		r.next = 1 // an epoch's first: nothing comes before it
	}
	switch {
	case r.next != 0 && m.Offset < r.next:
		return // delivered already, or given up on
	case m.Offset == r.next:
		out(m)
		r.next++
		o.release(m.Room, r, out, false)
	default:
		// Something before it is missing, or (next unknown: the first
		// broadcast heard in this room) may be on its way.
		if _, dup := r.held[m.Offset]; dup {
			return
		}
		if r.held == nil {
			r.held = make(map[uint64]broker.Message)
		}
		if len(r.held) == 0 {
			r.since = now
			o.waiting[m.Room] = r
		}
		r.held[m.Offset] = m
	}
}

// release delivers the held broadcasts that follow r.next; with all, the
// rest too, in order, skipping what is missing.
func (o *reorder) release(name string, r *roomOrder, out func(broker.Message), all bool) {
	for len(r.held) > 0 {
		m, ok := r.held[r.next]
		if !ok {
			if !all {
				break
			}
			r.next = lowest(r.held)
			m = r.held[r.next]
		}
		delete(r.held, r.next)
		out(m)
		r.next++
	}
	if len(r.held) == 0 {
		delete(o.waiting, name)
	}
}

// expire gives up, in the rooms that waited reorderWindow, on what is
// still missing: it delivers what follows the gap, up to the next one,
// which waits a window of its own.
func (o *reorder) expire(now time.Time, out func(broker.Message)) {
	for name, r := range o.waiting {
		if now.Sub(r.since) < reorderWindow {
			continue
		}
		r.next = lowest(r.held)
		o.release(name, r, out, false)
		r.since = now
	}
}

func (o *reorder) holding() bool { return len(o.waiting) > 0 }

func lowest(held map[uint64]broker.Message) uint64 {
	low := uint64(0)
	for off := range held {
		if low == 0 || off < low {
			low = off
		}
	}
	return low
}
