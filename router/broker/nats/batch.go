package nats

// Batched appends (group commit).
//
// An append is a round trip to JetStream, and a room's appends cannot
// overlap: each names the stream sequence of the room's previous message
// (Nats-Expected-Last-Subject-Sequence, and the Moonwire-Prev header read
// backs follow), which is known only once that message is acknowledged.
// Pipelining the publishes is therefore impossible without giving up the
// check that keeps offsets contiguous across nodes. What can be done is to
// carry several broadcasts in one JetStream message: while one append of
// a room is in flight, the broadcasts that arrive for the room wait, and
// the next append carries all of them (a unit), with contiguous offsets,
// under one expected sequence and one ack. A room then costs one round
// trip per unit instead of one per broadcast, however many arrive.
//
// A unit of one broadcast is stored exactly as before (the wire form of
// the broadcast). A unit of several carries Moonwire-Count (n > 1) and,
// as its data, each broadcast's wire form preceded by its length (a
// uvarint). Moonwire-Offset is the unit's last offset, so the next append
// computes its offset as before; its first is Offset - Count + 1.
//
// Bounds. A unit holds at most unitMax broadcasts and unitBytes bytes (one
// broadcast larger than that goes alone). The broadcasts submitted and not
// yet appended, over all rooms, are at most opts.Outbox (the outage
// queue's bound): past it PublishHistory returns ErrDropped, as a full
// outage queue does. One goroutine per room with appends in flight runs
// the room's units, and exits when the room has none waiting.
//
// Retries. A unit has one Nats-Msg-Id. Once it has been sent it is never
// changed (only its offsets are recomputed after a lost race), so a retry
// of a unit that was stored but not acknowledged is a duplicate the server
// drops, and the stored unit's positions are reported. A unit that met an
// unreachable server goes to the outage queue whole.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/moonwire/moonwire/router/broker"
)

const (
	// hdrCount is the number of broadcasts of a unit, when more than one.
	hdrCount = "Moonwire-Count"
	// unitMax bounds the broadcasts of one unit: the receiver holds a
	// unit's broadcasts at once, and a reader decodes a whole unit to get
	// one of its entries.
	unitMax = 256
	// unitBytes bounds a unit's data, well below nats-server's default
	// max_payload (1 MB); also never more than half the server's own.
	unitBytes = 256 << 10
	// unitReadMax: a stored unit claiming more broadcasts than this is not
	// ours (it bounds what a reader allocates for one message).
	unitReadMax = 4096
	// itemOverhead is what a broadcast's wire form and stamp add to its
	// data, at most, besides the names it carries.
	itemOverhead = 128
)

// unit is one JetStream message's worth of broadcasts of one room, all
// with the same size and ttl, appended with contiguous offsets.
type unit struct {
	subj  string
	items []queued
	size  int
	ttl   time.Duration
	bytes int
	id    string // Nats-Msg-Id
	// sent: it went to the server at least once, so it may be stored, and
	// must stay as it is (the same broadcasts under the same id).
	sent bool
}

// itemBytes estimates the bytes it adds to a unit.
func itemBytes(it *queued) int {
	return len(it.m.Data) + len(it.m.Room) + len(it.m.Origin) + len(it.m.Except) + itemOverhead
}

// fits reports whether it may join u.
func (u *unit) fits(it *queued, limit int) bool {
	return !u.sent && len(u.items) < unitMax && it.size == u.size && it.ttl == u.ttl &&
		u.bytes+itemBytes(it) <= limit
}

func (u *unit) add(it queued) {
	u.items = append(u.items, it)
	u.bytes += itemBytes(&it)
}

// newUnit starts a unit with it.
func (b *Broker) newUnit(subj string, it queued) *unit {
	u := &unit{subj: subj, size: it.size, ttl: it.ttl, id: b.h.nextID()}
	u.add(it)
	return u
}

func (h *history) nextID() string { return h.idPrefix + strconv.FormatUint(h.ids.Add(1), 36) }

// unitLimit is the byte bound of a unit on this connection.
func (b *Broker) unitLimit() int {
	limit := int64(unitBytes)
	if mp := b.nc.MaxPayload(); mp > 0 {
		limit = min(limit, mp/2)
	}
	return int(limit)
}

// encodeUnit returns the stored data of broadcasts ms (offsets set).
func encodeUnit(ms []broker.Message) []byte {
	if len(ms) == 1 {
		return broker.AppendWire(nil, &ms[0])
	}
	var out, one []byte
	for i := range ms {
		one = broker.AppendWire(one[:0], &ms[i])
		out = binary.AppendUvarint(out, uint64(len(one)))
		out = append(out, one...)
	}
	return out
}

// decodeUnit splits a stored unit of count broadcasts into their wire
// forms (aliasing data); count 1 is the data itself.
func decodeUnit(data []byte, count uint64) ([][]byte, error) {
	if count == 1 {
		return [][]byte{data}, nil
	}
	if count == 0 || count > unitReadMax {
		return nil, fmt.Errorf("unit of %d broadcasts", count)
	}
	out := make([][]byte, 0, count)
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return nil, fmt.Errorf("unit: broadcast %d truncated", len(out)+1)
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	if uint64(len(out)) != count {
		return nil, fmt.Errorf("unit: %d broadcasts, header says %d", len(out), count)
	}
	return out, nil
}

// waiter is a PublishHistory waiting for its broadcast's unit.
type waiter struct {
	it   queued
	done chan appendResult // buffered: the room goroutine never waits
}

type appendResult struct {
	pos broker.Position
	err error
}

// roomQ is a room's broadcasts waiting for the append in flight.
type roomQ struct {
	waiting []*waiter
}

// submit hands w to its room's goroutine, starting it when the room has
// none; ErrDropped when opts.Outbox broadcasts are waiting already.
func (b *Broker) submit(subj string, w *waiter) error {
	h := b.h
	h.bmu.Lock()
	defer h.bmu.Unlock()
	if h.bclosed {
		return errClosed
	}
	if h.inflight >= h.qcap {
		h.qdropped.Add(1)
		if held, ok := b.dropLog.allow(); ok {
			b.log.Warn("history appends fall behind and their queue is full, broadcasts dropped", "dropped", held+1,
				"queue", h.qcap, "room", w.it.m.Room)
		}
		return broker.ErrDropped
	}
	h.inflight++
	r := h.rooms[subj]
	if r != nil {
		r.waiting = append(r.waiting, w)
		return nil
	}
	r = &roomQ{waiting: []*waiter{w}}
	h.rooms[subj] = r
	h.bwg.Add(1)
	go b.runRoom(subj, r)
	return nil
}

// withdraw takes w back if its append has not started: true when it has
// been removed (and will not be appended).
func (b *Broker) withdraw(subj string, w *waiter) bool {
	h := b.h
	h.bmu.Lock()
	defer h.bmu.Unlock()
	r := h.rooms[subj]
	if r == nil {
		return false
	}
	for i, x := range r.waiting {
		if x == w {
			r.waiting = append(r.waiting[:i], r.waiting[i+1:]...)
			h.inflight--
			return true
		}
	}
	return false
}

// inflightLen is the broadcasts submitted and not yet done with.
func (h *history) inflightLen() int {
	h.bmu.Lock()
	defer h.bmu.Unlock()
	return h.inflight
}

// runRoom appends room subj's waiting broadcasts, a unit at a time, in
// the order they were submitted, until none is waiting.
func (b *Broker) runRoom(subj string, r *roomQ) {
	h := b.h
	defer h.bwg.Done()
	for {
		limit := b.unitLimit()
		h.bmu.Lock()
		if len(r.waiting) == 0 {
			delete(h.rooms, subj)
			h.bmu.Unlock()
			return
		}
		ws := []*waiter{r.waiting[0]}
		u := b.newUnit(subj, r.waiting[0].it)
		for _, w := range r.waiting[1:] {
			if !u.fits(&w.it, limit) {
				break
			}
			u.add(w.it)
			ws = append(ws, w)
		}
		r.waiting[0] = nil
		r.waiting = r.waiting[len(ws):]
		if len(r.waiting) == 0 {
			r.waiting = nil // let a burst's backing array go
		}
		h.bmu.Unlock()

		for i, res := range b.appendDirect(u) {
			ws[i].done <- res
		}
		h.bmu.Lock()
		h.inflight -= len(ws)
		h.bmu.Unlock()
	}
}

// appendDirect appends u now, or queues it behind the outage queue when
// that holds anything (one node's broadcasts keep their order) or the
// connection is down, or after a failure that may be an outage. It
// returns each broadcast's outcome.
func (b *Broker) appendDirect(u *unit) []appendResult {
	res := make([]appendResult, len(u.items))
	fail := func(err error) []appendResult {
		for i := range res {
			res[i].err = err
		}
		return res
	}
	if done, err := b.enqueueUnit(u, false); done {
		return fail(err)
	}
	u.sent = true // not shared yet: no lock needed
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	ps, err := b.appendUnit(ctx, u)
	cancel()
	if err == nil {
		for i, p := range ps {
			res[i].pos = p
		}
		return res
	}
	if (unreachable(err) || !b.nc.IsConnected()) && b.ctx.Err() == nil && !b.closed.Load() {
		// Perhaps stored and unacknowledged: the queued retry is the same
		// unit under the same Nats-Msg-Id, which the server recognises.
		_, qerr := b.enqueueUnit(u, true)
		if n, ok := b.unackLog.allow(); ok {
			b.log.Warn("broadcast with history not acknowledged, queued", "room", u.items[0].m.Room,
				"broadcasts", len(u.items), "not_logged", n, "err", err)
		}
		return fail(qerr)
	}
	if b.ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", errClosed, err)
	}
	b.errs.Add(1)
	b.setErr(err)
	return fail(err)
}

// enqueueUnit queues u when the connection is down or the queue holds
// anything (always with force), returning ErrQueued, or ErrDropped when
// its broadcasts do not fit; done is false when it should be appended now.
func (b *Broker) enqueueUnit(u *unit, force bool) (done bool, err error) {
	h := b.h
	h.qmu.Lock()
	defer h.qmu.Unlock()
	if !force && len(h.q) == 0 && b.nc.IsConnected() {
		return false, nil
	}
	if h.qn+len(u.items) > h.qcap {
		h.qdropped.Add(uint64(len(u.items)))
		if held, ok := b.dropLog.allow(); ok {
			b.log.Warn("broker unreachable and history queue full, broadcasts dropped", "dropped", held+uint64(len(u.items)),
				"queue", h.qcap, "room", u.items[0].m.Room)
		}
		return true, broker.ErrDropped
	}
	h.q = append(h.q, u)
	h.qn += len(u.items)
	h.poke()
	return true, broker.ErrQueued
}

// errWithdrawn: the caller gave up before its broadcast was appended.
var errWithdrawn = errors.New("nats: broadcast with history withdrawn before its append")
