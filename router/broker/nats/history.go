package nats

// Rooms' history over JetStream (broker.History).
//
// Layout. One stream per prefix (streamName: PREFIX_history, file storage)
// captures PREFIX.hist.>, one subject per room (PREFIX.hist.TOKEN, the
// token of the room subjects). Every stored message is the wire form of
// the broadcast with its Offset and Epoch set, and carries in its headers
// the offset, the epoch, the oldest offset the room keeps after it, the ttl
// given at its append and the stream sequence of the room's previous
// message (0 for an epoch's first).
//
// Appending is optimistic: read the room's last message (a direct get),
// compute the next offset of its epoch, or offset 1 of a fresh epoch when
// there is none or it has expired, and publish with
// Nats-Expected-Last-Subject-Sequence set to that message's sequence. The
// stream refuses the publish when another append, from any node, came in
// between; the loser reads again (bounded by maxRaces and the deadline).
// So offsets are consecutive per room however many nodes append. A node
// serialises its own appends per room (stripes) so that only other nodes
// race with it, and remembers the last message it appended to skip the
// read while nobody else writes. The broadcasts that arrive for a room
// while its append is in flight go together in the next one, a unit of
// contiguous offsets in one stream message (batch.go). Nats-Msg-Id, one
// per unit and kept across retries and the outage queue, makes the retry
// of a publish that was stored but not acknowledged a duplicate the server
// drops (within the stream's duplicate window).
//
// Delivery. The stream republishes what it stores (RePublish, nats-server
// 2.9+) to PREFIX.live.TOKEN, once per stored message, from the server's
// own client: every node that subscribes a room's live subject (WatchRoom
// does, beside the room subject) hears the room's appends, the origin
// included (NoEcho does not apply). nats-server 2.9 may send two close
// appends from different connections swapped, so the receive goroutine
// puts each room back in offset order (order.go). Nobody subscribes the
// hist subjects themselves: core subscribers there would also get the
// publishes the stream refused.
//
// Size and ttl. A stream has one per-subject limit and one max age, so
// both are raised to the largest size and ttl any node has asked for, and
// never lowered. A room's own size and ttl are applied from the headers of
// its last message, as Memory applies those of the last append: each
// append records the oldest offset kept (its offset - size + 1, never
// lower than the previous append's), ReadHistory returns nothing older,
// and a room whose last message is older than its ttl is expired (a zero
// Position; the next append starts a new epoch and purges the old
// entries). The age limit removes entries by their own age, so an entry of
// a room still in use is removed once older than the longest ttl, where
// Memory would keep it while within size; ReadHistory then reports it
// trimmed (oldest), never wrong. Expiry compares the server's timestamps
// with this node's clock: clocks must agree to well within a ttl.
//
// Outage. While the connection is down (or the queue holds anything, so
// that one node's broadcasts keep their order) PublishHistory queues, up
// to opts.Outbox broadcasts, and a goroutine appends them on reconnect,
// a room's consecutive queued broadcasts as one unit.
//
// Reading. A read of up to walkMax entries follows the Moonwire-Prev
// sequences back from the room's last message; a longer one finds the
// stream message holding its first entry by a binary search (seek) and
// reads on from there with a consumer, never from the room's start.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	mrand "math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/internal/jsread"
	"github.com/moonwire/moonwire/router/broker"
)

// Headers of a stored message.
const (
	hdrOffset = "Moonwire-Offset"
	hdrEpoch  = "Moonwire-Epoch"
	hdrOldest = "Moonwire-Oldest"
	hdrTTL    = "Moonwire-Ttl" // milliseconds
	hdrPrev   = "Moonwire-Prev"
)

const (
	// maxRaces bounds the appends one PublishHistory loses to other nodes
	// before it gives up; with a short random pause after each loss, a
	// room that a handful of nodes write at full speed stays far below.
	maxRaces = 200
	// walkMax: a read of at most this many entries follows the previous-
	// message sequences back from the last message (one direct get per
	// stored message, fewer than entries when appends were batched); a
	// longer one finds its start by a binary search (seek) and reads the
	// room's subject from there with a short-lived consumer. A consumer
	// costs the server three JetStream API requests, which queue behind
	// every other node's in a storm of joins; chat.lua's replay of 20 to
	// a newcomer stays a walk.
	walkMax   = 32
	readBatch = 256
	// scanRetries and scanWait bound the fetches a scan repeats when one
	// brings nothing before the room's last message (see scan).
	scanRetries = 3
	scanWait    = 100 * time.Millisecond
	// lastCacheMax bounds the rooms whose last append is remembered.
	lastCacheMax = 4096
	lockStripes  = 256
	// drainTries: a queued broadcast that fails this many times for a
	// reason other than the connection is dropped (logged), so that one
	// bad message cannot hold the queue.
	drainTries = 10
	// maxDupWindow is the stream's duplicate window, unless the longest
	// ttl is shorter (the server wants it within the max age).
	maxDupWindow = 2 * time.Minute
	// minMaxAge: the stream keeps messages at least this long, whatever
	// the ttls (nats-server refuses very short max ages); a room expires
	// after its own ttl all the same.
	minMaxAge = time.Second
)

// dupWindow is the duplicate window for a stream max age.
func dupWindow(maxAge time.Duration) time.Duration {
	if maxAge == 0 {
		return maxDupWindow
	}
	return min(maxDupWindow, maxAge)
}

// errNoStream: the history stream does not exist (nothing was written).
var errNoStream = errors.New("history stream does not exist")

// history is the Broker's JetStream state.
type history struct {
	js   jetstream.JetStream
	name string // the stream

	// gen changes on every disconnect and reconnect: what was remembered
	// under an older one (the stream's limits, rooms' last appends) may
	// describe a server that lost its store, and is read again.
	gen atomic.Uint64

	ensureMu sync.Mutex // one stream lookup, creation or update at a time
	mu       sync.Mutex
	st       jetstream.Stream // nil: look it up
	stGen    uint64
	maxPer   int64         // the stream's per-subject limit; <= 0 unlimited
	maxAge   time.Duration // the stream's max age; 0 unlimited

	lastMu sync.Mutex
	last   map[string]lastMsg // by subject: this node's last append

	seed  maphash.Seed
	locks [lockStripes]sync.Mutex

	idPrefix string
	ids      atomic.Uint64

	// The outage queue: units in order, qn broadcasts in all (at most
	// qcap).
	qmu      sync.Mutex
	q        []*unit
	qn       int
	qcap     int
	qdropped atomic.Uint64
	wake     chan struct{}

	// The rooms' waiting broadcasts (batch.go): inflight counts those
	// submitted and not done with, at most qcap; bwg the rooms'
	// goroutines, which Close waits for once bclosed is set.
	bmu      sync.Mutex
	rooms    map[string]*roomQ
	inflight int
	bclosed  bool
	bwg      sync.WaitGroup
}

// queued is a broadcast waiting for its append.
type queued struct {
	m    broker.Message
	size int
	ttl  time.Duration
}

// lastMsg is what an append needs of a room's last message.
type lastMsg struct {
	seq    uint64 // 0: the room has none
	offset uint64 // its last offset
	first  uint64 // its first offset (a unit of several: see batch.go)
	count  uint64 // its broadcasts: offset - first + 1
	epoch  string
	oldest uint64 // the oldest offset kept
	ttl    time.Duration
	at     time.Time
	prev   uint64
	gen    uint64 // for the cache
}

func (l lastMsg) expired(now time.Time) bool { return now.After(l.at.Add(l.ttl)) }

// newHistory returns the history state; js follows once connected.
func newHistory(prefix string, queue int) *history {
	var id [6]byte
	_, _ = rand.Read(id[:])
	return &history{
		name:     streamName(prefix),
		last:     make(map[string]lastMsg),
		rooms:    make(map[string]*roomQ),
		seed:     maphash.MakeSeed(),
		idPrefix: hex.EncodeToString(id[:]) + "-",
		qcap:     max(queue, 1),
		wake:     make(chan struct{}, 1),
	}
}

var streamNameOK = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// streamName names the prefix's history stream, bucketName its presence
// bucket (see jsName).
func streamName(prefix string) string { return jsName(prefix, "history") }
func bucketName(prefix string) string { return jsName(prefix, "presence") }

// jsName names the prefix's JetStream asset of a kind. A stream or bucket
// name cannot hold dots (nor wildcards, spaces or path separators), so a
// prefix that is not a plain name keeps its letters and digits and gains a
// hash of itself, which keeps "a.b" and "a_b" apart.
func jsName(prefix, kind string) string {
	if streamNameOK.MatchString(prefix) {
		return prefix + "_" + kind
	}
	clean := []byte(prefix)
	for i, c := range clean {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			clean[i] = '_'
		}
	}
	if len(clean) > 64 {
		clean = clean[:64]
	}
	sum := sha256.Sum256([]byte(prefix)) // the same on every node
	return string(clean) + "_" + kind + "_" + hex.EncodeToString(sum[:5])
}

func (b *Broker) histSubject(room string) string { return b.prefix + ".hist." + token(room) }
func (b *Broker) liveSubject(room string) string { return b.prefix + ".live." + token(room) }

func (b *Broker) streamConfig(size int, ttl time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              b.h.name,
		Description:       "moonwire rooms' history (" + b.prefix + ")",
		Subjects:          []string{b.prefix + ".hist.>"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: int64(size),
		MaxAge:            ttl,
		Duplicates:        dupWindow(ttl),
		AllowDirect:       true,
		RePublish:         &jetstream.RePublish{Source: b.prefix + ".hist.>", Destination: b.prefix + ".live.>"},
	}
}

// stream returns the history stream with a per-subject limit of at least
// size and a max age of at least ttl, creating or raising it as needed;
// size 0 only looks it up (errNoStream: it does not exist).
func (b *Broker) stream(ctx context.Context, size int, ttl time.Duration) (jetstream.Stream, error) {
	h := b.h
	if size > 0 {
		ttl = max(ttl, minMaxAge)
	}
	enough := func(per int64, age time.Duration) bool {
		return (per <= 0 || int64(size) <= per) && (age == 0 || ttl <= age)
	}
	cached := func() jetstream.Stream {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.st != nil && h.stGen == h.gen.Load() && enough(h.maxPer, h.maxAge) {
			return h.st
		}
		return nil
	}
	if st := cached(); st != nil {
		return st, nil
	}
	h.ensureMu.Lock()
	defer h.ensureMu.Unlock()
	if st := cached(); st != nil {
		return st, nil
	}
	gen := h.gen.Load()
	// Several nodes may raise the limits at once from the same old
	// configuration, each undoing the other's raise: each reads back
	// until its own is in place. The limits only grow, so this ends.
	var createErr error // the last create's, while the stream is not found
	for attempt := range 8 {
		st, err := h.js.Stream(ctx, h.name)
		createErr = nil
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if size == 0 {
				return nil, errNoStream
			}
			st, err = h.js.CreateStream(ctx, b.streamConfig(size, ttl))
			if createdElsewhere(err) {
				createErr = err
				if err := pause(ctx, attempt); err != nil {
					return nil, b.jsErr("create stream "+h.name, err)
				}
				continue
			}
			if err != nil {
				return nil, b.jsErr("create stream "+h.name, err)
			}
			b.log.Info("history stream created", "stream", h.name, "subjects", b.prefix+".hist.>")
		} else if err != nil {
			return nil, b.jsErr("look up stream "+h.name, err)
		}
		cfg := st.CachedInfo().Config
		if rp := cfg.RePublish; rp == nil || rp.Destination != b.prefix+".live.>" || rp.HeadersOnly {
			// nats-server refuses to change RePublish on an existing stream.
			return nil, fmt.Errorf("nats: stream %s exists but does not republish %s.hist.> to %s.live.>, "+
				"which history needs: delete it (nats stream rm %s) and moonwire creates it", h.name, b.prefix, b.prefix, h.name)
		}
		if enough(cfg.MaxMsgsPerSubject, cfg.MaxAge) {
			h.mu.Lock()
			h.st, h.stGen, h.maxPer, h.maxAge = st, gen, cfg.MaxMsgsPerSubject, cfg.MaxAge
			h.mu.Unlock()
			return st, nil
		}
		if cfg.MaxMsgsPerSubject > 0 && int64(size) > cfg.MaxMsgsPerSubject {
			cfg.MaxMsgsPerSubject = int64(size)
		}
		if cfg.MaxAge != 0 && ttl > cfg.MaxAge {
			cfg.MaxAge = ttl
		}
		cfg.Duplicates = max(cfg.Duplicates, dupWindow(cfg.MaxAge))
		if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
			return nil, b.jsErr(fmt.Sprintf("raise the limits of stream %s to %d messages per room, max age %v", h.name, cfg.MaxMsgsPerSubject, cfg.MaxAge), err)
		}
		b.log.Info("history stream limits raised", "stream", h.name, "per_room", cfg.MaxMsgsPerSubject, "max_age", cfg.MaxAge)
	}
	if createErr != nil {
		return nil, b.jsErr("create stream "+h.name, createErr)
	}
	return nil, fmt.Errorf("nats: stream %s: its limits keep changing, not raised to %d messages per room and max age %v", h.name, size, ttl)
}

// forgetStream makes the next call look the stream up again: it was not
// where it was thought to be (a server that lost its store).
func (h *history) forgetStream() {
	h.mu.Lock()
	h.st = nil
	h.mu.Unlock()
}

// jsErr names the operation; no responders to a JetStream request means
// JetStream is not there at all, which deserves to be said plainly.
func (b *Broker) jsErr(op string, err error) error {
	if errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		apiCode(err) == jetstream.JSErrCodeJetStreamNotEnabledForAccount {
		return fmt.Errorf("nats: %s: %s: JetStream is not enabled on the server or for this account "+
			"(history and presence need nats-server -js): %w", b.url, op, err)
	}
	return fmt.Errorf("nats: %s: %s: %w", b.url, op, err)
}

func apiCode(err error) jetstream.ErrorCode {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode
	}
	return 0
}

// noStream reports an error that means the stream is not (or no longer)
// there: a lookup again tells whether it is gone or JetStream is.
func noStream(err error) bool {
	return errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// unreachable reports an error that means the server did not answer: the
// broadcast is queued rather than lost.
func unreachable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, natsgo.ErrTimeout) ||
		errors.Is(err, natsgo.ErrConnectionReconnecting) || errors.Is(err, natsgo.ErrDisconnected) ||
		errors.Is(err, natsgo.ErrNoServers)
}

// bound gives ctx the broker's timeout when it has no deadline.
func (b *Broker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// PublishHistory implements broker.History. The broadcast joins its
// room's next unit (batch.go) and the call waits for that unit's ack, at
// most until ctx ends: then it returns ErrQueued, and the broadcast is
// appended all the same (or, ctx cancelled before its append began, not
// at all, and the error says so).
func (b *Broker) PublishHistory(ctx context.Context, m broker.Message, size int, ttl time.Duration) (broker.Position, error) {
	if b.closed.Load() {
		return broker.Position{}, errClosed
	}
	if m.Op != broker.OpBroadcast {
		return broker.Position{}, fmt.Errorf("nats: PublishHistory takes a broadcast, not op %d", m.Op)
	}
	if size < 1 || ttl <= 0 {
		return broker.Position{}, fmt.Errorf("nats: history of room %.40q: size %d and ttl %v must be positive", m.Room, size, ttl)
	}
	// The caller's buffer is theirs again once we return, which may be
	// before the append.
	m.Data = append([]byte(nil), m.Data...)
	it := queued{m: m, size: size, ttl: ttl}
	subj := b.histSubject(m.Room)
	// Behind a queue that is not empty, even when connected again: one
	// node's broadcasts keep their order.
	if done, err := b.enqueue(subj, it); done {
		return broker.Position{}, err
	}
	w := &waiter{it: it, done: make(chan appendResult, 1)}
	if err := b.submit(subj, w); err != nil {
		return broker.Position{}, err
	}
	select {
	case r := <-w.done:
		return r.pos, r.err
	case <-ctx.Done():
	}
	if errors.Is(ctx.Err(), context.Canceled) && b.withdraw(subj, w) {
		return broker.Position{}, fmt.Errorf("%w: %w", errWithdrawn, ctx.Err())
	}
	// Its unit is on its way (or waits for the one in flight): it is
	// appended, or queued for the reconnect if the server does not answer.
	if n, ok := b.pubLog.allow(); ok {
		b.log.Warn("broadcast with history not acknowledged in time, appended later", "room", m.Room,
			"not_logged", n, "err", ctx.Err())
	}
	return broker.Position{}, broker.ErrQueued
}

// enqueue queues it when the connection is down or the queue holds
// anything, returning ErrQueued, or ErrDropped when the queue is full;
// done is false when it should be appended now. It joins the last unit
// when that one was not sent yet and is of its room.
func (b *Broker) enqueue(subj string, it queued) (done bool, err error) {
	h := b.h
	h.qmu.Lock()
	defer h.qmu.Unlock()
	if len(h.q) == 0 && b.nc.IsConnected() {
		return false, nil
	}
	if h.qn >= h.qcap {
		h.qdropped.Add(1)
		if held, ok := b.dropLog.allow(); ok {
			b.log.Warn("broker unreachable and history queue full, broadcasts dropped", "dropped", held+1,
				"queue", h.qcap, "room", it.m.Room)
		}
		return true, broker.ErrDropped
	}
	if n := len(h.q); n > 0 && h.q[n-1].subj == subj && h.q[n-1].fits(&it, b.unitLimit()) {
		h.q[n-1].add(it)
	} else {
		h.q = append(h.q, b.newUnit(subj, it))
	}
	h.qn++
	h.poke()
	return true, broker.ErrQueued
}

func (h *history) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *history) queueLen() int {
	h.qmu.Lock()
	defer h.qmu.Unlock()
	return h.qn
}

// drain appends the queued units, oldest first, while connected. A unit
// leaves the queue only once appended (or given up), so that
// PublishHistory keeps queueing behind it until then.
func (b *Broker) drain() {
	defer b.wg.Done()
	h := b.h
	fails := 0
	for {
		h.qmu.Lock()
		var u *unit
		if len(h.q) > 0 {
			u = h.q[0]
			u.sent = true // from now on it stays as it is
		}
		h.qmu.Unlock()
		var pause <-chan time.Time
		switch {
		case u == nil:
			// Wait for a broadcast.
		case !b.nc.IsConnected():
			pause = time.After(retryEvery) // and for the reconnect's poke
		default:
			if pause = b.drainOne(u, &fails); pause == nil {
				h.qmu.Lock()
				h.q[0] = nil
				h.q = h.q[1:]
				h.qn -= len(u.items)
				if len(h.q) == 0 {
					h.q = nil
				}
				h.qmu.Unlock()
				continue
			}
		}
		select {
		case <-b.stop:
			return
		case <-h.wake:
		case <-pause:
		}
	}
}

// drainOne appends the head of the queue; nil means it is done with
// (appended, or dropped after drainTries failures), else it is tried
// again after the pause.
func (b *Broker) drainOne(u *unit, fails *int) <-chan time.Time {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	_, err := b.appendUnit(ctx, u)
	cancel()
	switch {
	case err == nil:
		*fails = 0
		return nil
	case b.ctx.Err() != nil || unreachable(err) || !b.nc.IsConnected():
		return time.After(reconnectWait)
	}
	room := u.items[0].m.Room
	if *fails++; *fails < drainTries {
		if n, ok := b.retryLog.allow(); ok {
			b.log.Warn("queued broadcast with history failed, retrying", "room", room, "broadcasts", len(u.items),
				"not_logged", n, "err", err)
		}
		return time.After(retryEvery)
	}
	*fails = 0
	b.errs.Add(1)
	b.setErr(err)
	b.log.Error("queued broadcasts with history dropped", "room", room, "broadcasts", len(u.items),
		"attempts", drainTries, "err", err)
	return nil
}

// appendOnce appends one broadcast alone under Nats-Msg-Id id (tests).
func (b *Broker) appendOnce(ctx context.Context, it *queued, id string) (broker.Position, error) {
	u := &unit{subj: b.histSubject(it.m.Room), size: it.size, ttl: it.ttl, id: id}
	u.add(*it)
	ps, err := b.appendUnit(ctx, u)
	if err != nil {
		return broker.Position{}, err
	}
	return ps[0], nil
}

// appendUnit appends a unit: it returns its broadcasts' positions once
// the stream has it, or the error that stopped it.
func (b *Broker) appendUnit(ctx context.Context, u *unit) ([]broker.Position, error) {
	h := b.h
	subj := u.subj
	st, err := b.stream(ctx, u.size, u.ttl)
	if err != nil {
		return nil, err
	}
	lock := &h.locks[maphash.String(h.seed, subj)%lockStripes]
	lock.Lock()
	defer lock.Unlock()

	n := uint64(len(u.items))
	ms := make([]broker.Message, n)
	ps := make([]broker.Position, n)
	last, known := h.cachedLast(subj)
	refound := false
	for races := 0; ; {
		if !known {
			last, err = b.readLast(ctx, st, subj)
			if err != nil && noStream(err) && !refound {
				refound = true
				h.forgetStream()
				if st, err = b.stream(ctx, u.size, u.ttl); err != nil {
					return nil, err
				}
				continue
			}
			if err != nil {
				return nil, b.jsErr(fmt.Sprintf("stream %s: read the last message of %s", h.name, subj), err)
			}
			known = true
		}
		now := time.Now()
		// first: the unit's first position; top its last offset.
		first, prev, oldest := broker.Position{Offset: 1, Epoch: broker.NewEpoch()}, uint64(0), uint64(1)
		if last.seq != 0 && !last.expired(now) {
			first, prev, oldest = broker.Position{Offset: last.offset + 1, Epoch: last.epoch}, last.seq, last.oldest
		}
		top := first.Offset + n - 1
		if top > uint64(u.size) {
			oldest = max(oldest, top-uint64(u.size)+1)
		}
		for i := range ms {
			ms[i] = u.items[i].m
			ps[i] = broker.Position{Offset: first.Offset + uint64(i), Epoch: first.Epoch}
			ms[i].Offset, ms[i].Epoch = ps[i].Offset, ps[i].Epoch
			if ms[i].Stamp {
				ms[i].Data = broker.Stamp(ms[i].Data, ps[i])
			}
		}
		hdr := natsgo.Header{
			jetstream.MsgIDHeader:               {u.id},
			jetstream.ExpectedStreamHeader:      {h.name},
			jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(last.seq, 10)},
			hdrOffset:                           {strconv.FormatUint(top, 10)},
			hdrEpoch:                            {first.Epoch},
			hdrOldest:                           {strconv.FormatUint(oldest, 10)},
			hdrTTL:                              {strconv.FormatInt(u.ttl.Milliseconds(), 10)},
			hdrPrev:                             {strconv.FormatUint(prev, 10)},
		}
		if n > 1 {
			hdr[hdrCount] = []string{strconv.FormatUint(n, 10)}
		}
		msg := &natsgo.Msg{Subject: subj, Data: encodeUnit(ms), Header: hdr}
		gen := h.gen.Load()
		ack, err := h.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
		switch {
		case err == nil && ack.Duplicate:
			// An earlier try of this unit was stored: its positions are
			// the ones to report.
			h.forgetLast(subj)
			b.publishes.Add(n)
			stored, err := getMsg(ctx, st, ack.Sequence)
			if err != nil {
				return nil, b.jsErr(fmt.Sprintf("stream %s: broadcasts stored as %d on %s, but read them back", h.name, ack.Sequence, subj), err)
			}
			l, err := parseLast(stored)
			if err != nil {
				return nil, fmt.Errorf("nats: stream %s: %w", h.name, err)
			}
			if l.count != n {
				return nil, fmt.Errorf("nats: stream %s: unit %s stored as %d on %s holds %d broadcasts, not %d", h.name, u.id, ack.Sequence, subj, l.count, n)
			}
			for i := range ps {
				ps[i] = broker.Position{Offset: l.first + uint64(i), Epoch: l.epoch}
			}
			return ps, nil
		case err == nil:
			b.publishes.Add(n)
			h.remember(subj, lastMsg{seq: ack.Sequence, offset: top, first: first.Offset, count: n, epoch: first.Epoch,
				oldest: oldest, ttl: u.ttl, at: now, prev: prev, gen: gen})
			if first.Offset == 1 && last.seq != 0 {
				// A new epoch: the older one's entries are of no use.
				if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(ack.Sequence)); err != nil {
					b.log.Warn("history: old epoch not purged (read skips it)", "stream", h.name, "subject", subj, "err", err)
				}
			}
			return ps, nil
		case apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequence || apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			// Another append came first.
			known = false
			if races++; races >= maxRaces {
				return nil, fmt.Errorf("nats: stream %s: %s: lost %d races to other appends, giving up: %w", h.name, subj, races, err)
			}
			if races > 2 {
				time.Sleep(time.Duration(mrand.Int64N(int64(min(races, 20)) * int64(100*time.Microsecond))))
			}
		case noStream(err) && !refound:
			refound, known = true, false
			h.forgetStream()
			if st, err = b.stream(ctx, u.size, u.ttl); err != nil {
				return nil, err
			}
		default:
			return nil, b.jsErr(fmt.Sprintf("stream %s: publish to %s", h.name, subj), err)
		}
	}
}

func (h *history) cachedLast(subj string) (lastMsg, bool) {
	h.lastMu.Lock()
	defer h.lastMu.Unlock()
	l, ok := h.last[subj]
	return l, ok && l.gen == h.gen.Load()
}

func (h *history) remember(subj string, l lastMsg) {
	h.lastMu.Lock()
	defer h.lastMu.Unlock()
	if len(h.last) >= lastCacheMax {
		clear(h.last)
	}
	h.last[subj] = l
}

func (h *history) forgetLast(subj string) {
	h.lastMu.Lock()
	delete(h.last, subj)
	h.lastMu.Unlock()
}

// getMsg, getLast and kvGet are the stream's and the presence bucket's
// direct gets, asked again when one gets no answer (see jsread):
// nats-server 2.9 may lose the first direct get of a stream (a bucket is
// one) another node has just created.
func getMsg(ctx context.Context, st jetstream.Stream, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	return jsread.Do(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) { return st.GetMsg(ctx, seq, opts...) })
}

func getLast(ctx context.Context, st jetstream.Stream, subj string) (*jetstream.RawStreamMsg, error) {
	return jsread.Do(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) { return st.GetLastMsgForSubject(ctx, subj) })
}

func kvGet(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	return jsread.Do(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return kv.Get(ctx, key) })
}

// readLast returns the room's last message (seq 0: none).
func (b *Broker) readLast(ctx context.Context, st jetstream.Stream, subj string) (lastMsg, error) {
	raw, err := getLast(ctx, st, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return lastMsg{}, nil
	}
	if err != nil {
		return lastMsg{}, err
	}
	return parseLast(raw)
}

// parseLast reads a stored message's headers.
func parseLast(raw *jetstream.RawStreamMsg) (lastMsg, error) {
	l := lastMsg{seq: raw.Sequence, at: raw.Time, epoch: raw.Header.Get(hdrEpoch)}
	var err1, err2, err3, err4, err5 error
	l.offset, err1 = strconv.ParseUint(raw.Header.Get(hdrOffset), 10, 64)
	l.oldest, err2 = strconv.ParseUint(raw.Header.Get(hdrOldest), 10, 64)
	ms, err3 := strconv.ParseInt(raw.Header.Get(hdrTTL), 10, 64)
	l.prev, err4 = strconv.ParseUint(raw.Header.Get(hdrPrev), 10, 64)
	l.count = 1
	if c := raw.Header.Get(hdrCount); c != "" {
		l.count, err5 = strconv.ParseUint(c, 10, 64)
	}
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil || l.epoch == "" || l.offset == 0 || l.oldest == 0 ||
		l.oldest > l.offset || l.count == 0 || l.count > unitReadMax || l.count > l.offset {
		return lastMsg{}, fmt.Errorf("message %d on %s is not a moonwire history entry (headers %s, %s, %s, %s, %s, %s): %v",
			raw.Sequence, raw.Subject, hdrOffset, hdrEpoch, hdrOldest, hdrTTL, hdrPrev, hdrCount, err)
	}
	l.first = l.offset - l.count + 1
	l.ttl = time.Duration(ms) * time.Millisecond
	return l, nil
}

// ReadHistory implements broker.History.
func (b *Broker) ReadHistory(ctx context.Context, room string, since uint64, limit int) ([]broker.Entry, broker.Position, uint64, error) {
	if b.closed.Load() {
		return nil, broker.Position{}, 0, errClosed
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	subj := b.histSubject(room)
	for try := 0; ; try++ {
		st, err := b.stream(ctx, 0, 0)
		if errors.Is(err, errNoStream) {
			return nil, broker.Position{}, 0, nil
		}
		if err != nil {
			return nil, broker.Position{}, 0, err
		}
		es, top, oldest, err := b.read(ctx, st, subj, since, limit)
		if err != nil && noStream(err) && try == 0 {
			b.h.forgetStream()
			continue
		}
		if err != nil {
			return nil, broker.Position{}, 0, b.jsErr(fmt.Sprintf("stream %s: read %s", b.h.name, subj), err)
		}
		return es, top, oldest, nil
	}
}

func (b *Broker) read(ctx context.Context, st jetstream.Stream, subj string, since uint64, limit int) ([]broker.Entry, broker.Position, uint64, error) {
	raw, err := getLast(ctx, st, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, broker.Position{}, 0, nil
	}
	if err != nil {
		return nil, broker.Position{}, 0, err
	}
	last, err := parseLast(raw)
	if err != nil {
		return nil, broker.Position{}, 0, err
	}
	if last.expired(time.Now()) {
		return nil, broker.Position{}, 0, nil
	}
	top := broker.Position{Offset: last.offset, Epoch: last.epoch}
	// What the last append keeps, of what the server still has: its
	// first message of this epoch. A first message of an older epoch (its
	// purge failed) means this epoch lost nothing, since the server
	// removes a subject's oldest messages first.
	oldest := last.oldest
	firstRaw, err := getMsg(ctx, st, 1, jetstream.WithGetMsgSubject(subj))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, broker.Position{}, 0, nil // expired since
	}
	if err != nil {
		return nil, broker.Position{}, 0, err
	}
	first, err := parseLast(firstRaw)
	if err != nil {
		return nil, broker.Position{}, 0, err
	}
	if first.epoch == top.Epoch && first.first > oldest {
		oldest = first.first
	}
	if limit <= 0 || since >= top.Offset {
		return nil, top, oldest, nil
	}
	from := max(since+1, oldest)
	to := top.Offset
	if n := to - from + 1; uint64(limit) < n {
		to = from + uint64(limit) - 1
	}
	var es []broker.Entry
	if top.Offset-from < walkMax {
		es, err = b.walkBack(ctx, st, raw, last, from, to)
	} else {
		start := first.seq
		if first.epoch != top.Epoch || first.offset < from {
			// Not from the room's first message: a room of a long history
			// would be read whole for its last few entries.
			if start, err = b.seek(ctx, st, subj, first.seq, last.seq, top.Epoch, from); err != nil {
				return nil, broker.Position{}, 0, err
			}
		}
		es, err = b.scan(ctx, st, subj, start, last.seq, top.Epoch, from, to)
	}
	if err != nil {
		return nil, broker.Position{}, 0, err
	}
	// Entries missing at the start (removed while we read) move oldest:
	// the caller sees the room trimmed rather than a gap.
	if len(es) == 0 {
		oldest = min(to+1, top.Offset)
	} else if es[0].Offset > from {
		oldest = es[0].Offset
	}
	return es, top, oldest, nil
}

// seek returns the stream sequence of the room's first message, between
// lo and hi (the room's first and last), that is of epoch and holds offset
// from or a later one: a binary search by direct gets ("the subject's next
// message at or after"), about log2(hi-lo) of them. The room's messages
// come in sequence order with increasing offsets, an older epoch's first,
// so the condition holds from one message on; hi's message meets it.
func (b *Broker) seek(ctx context.Context, st jetstream.Stream, subj string, lo, hi uint64, epoch string, from uint64) (uint64, error) {
	for lo < hi {
		mid := lo + (hi-lo)/2
		raw, err := getMsg(ctx, st, mid, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			hi = mid // removed meanwhile: what is left is after it
			continue
		}
		if err != nil {
			return 0, err
		}
		l, err := parseLast(raw)
		if err != nil {
			return 0, err
		}
		if l.epoch == epoch && l.offset >= from {
			hi = mid
		} else {
			lo = max(mid, raw.Sequence) + 1
		}
	}
	return lo, nil
}

// walkBack follows the previous-message sequences from the last message
// down to offset from, and returns the entries from..to (or those above
// the first one it could not reach).
func (b *Broker) walkBack(ctx context.Context, st jetstream.Stream, raw *jetstream.RawStreamMsg, cur lastMsg, from, to uint64) ([]broker.Entry, error) {
	type stored struct {
		raw *jetstream.RawStreamMsg
		l   lastMsg
	}
	var rev []stored
	for {
		if cur.first <= to {
			rev = append(rev, stored{raw, cur})
		}
		if cur.first <= from || cur.prev == 0 {
			break
		}
		next, err := getMsg(ctx, st, cur.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		l, err := parseLast(next)
		if err != nil || next.Subject != raw.Subject || l.epoch != cur.epoch || l.offset != cur.first-1 {
			break
		}
		raw, cur = next, l
	}
	es := make([]broker.Entry, 0, to-from+1)
	for i := len(rev) - 1; i >= 0; i-- {
		var err error
		if es, err = appendEntries(es, rev[i].raw.Data, rev[i].raw.Sequence, rev[i].raw.Subject, rev[i].l, from, to); err != nil {
			return nil, err
		}
	}
	return es, nil
}

// scan reads the room's subject from sequence start with a consumer of
// its own (no acks, in memory, deleted after) up to the last message, and
// returns the entries from..to of epoch: one request per readBatch
// messages instead of one per message. A gap restarts the result after it.
func (b *Broker) scan(ctx context.Context, st jetstream.Stream, subj string, start, end uint64, epoch string, from, to uint64) ([]broker.Entry, error) {
	var name [8]byte
	_, _ = rand.Read(name[:])
	cname := "mwread_" + hex.EncodeToString(name[:])
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Name:              cname,
		FilterSubject:     subj,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: max(b.opts.Timeout, 5*time.Second),
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", cname, subj, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cname) // else removed once inactive
	}()
	var es []broker.Entry
	empties := 0
	for {
		var batch jetstream.MessageBatch
		if empties == 0 {
			batch, err = c.FetchNoWait(readBatch)
		} else {
			batch, err = c.Fetch(readBatch, jetstream.FetchMaxWait(scanWait))
		}
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", cname, subj, err)
		}
		n := 0
		done := false
		for msg := range batch.Messages() {
			n++
			if done {
				continue
			}
			md, err := msg.Metadata()
			if err != nil {
				return nil, err
			}
			seq := md.Sequence.Stream
			if seq > end {
				done = true
				continue
			}
			l, err := parseLast(&jetstream.RawStreamMsg{Subject: subj, Sequence: seq, Header: msg.Headers(), Time: md.Timestamp})
			if err != nil || l.epoch != epoch || l.offset < from {
				done = done || seq == end
				continue
			}
			if len(es) > 0 && l.first > es[len(es)-1].Offset+1 {
				es = es[:0] // a gap: what came before is unusable
			}
			if l.first <= to {
				if es, err = appendEntries(es, msg.Data(), seq, subj, l, from, to); err != nil {
					return nil, err
				}
			}
			done = l.offset >= to || seq == end
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("consumer %s on %s: %w", cname, subj, err)
		}
		if done {
			return es, nil
		}
		// Nothing, yet the last message was not reached: a new consumer
		// now and then answers a no-wait fetch before it counts what is
		// pending (seen as a read short of a few entries, once in
		// thousands). Asked again, waiting a little, a few times: the
		// room's messages may also have been removed meanwhile.
		if n == 0 {
			if empties++; empties > scanRetries {
				return es, nil
			}
		} else {
			empties = 0
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// appendEntries appends the entries from..to of stored message seq (its
// headers l) to es.
func appendEntries(es []broker.Entry, data []byte, seq uint64, subj string, l lastMsg, from, to uint64) ([]broker.Entry, error) {
	wires, err := decodeUnit(data, l.count)
	if err != nil {
		return nil, fmt.Errorf("message %d on %s: %w", seq, subj, err)
	}
	for i, w := range wires {
		off := l.first + uint64(i)
		if off < from || off > to {
			continue
		}
		m, err := broker.DecodeWire(w)
		if err != nil {
			return nil, fmt.Errorf("message %d on %s, offset %d: %w", seq, subj, off, err)
		}
		es = append(es, broker.Entry{Offset: off, Binary: m.Binary, Data: m.Data})
	}
	return es, nil
}

// WaitWatched implements broker.History: it waits for the reconcile
// goroutine to hold both subscriptions of room, then for a round trip to
// the server, which has then seen them, so that whatever is stored after
// it returns is republished to this node too.
func (b *Broker) WaitWatched(ctx context.Context, room string) error {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	var cause error
	for {
		if b.closed.Load() {
			return errClosed
		}
		if !b.want.Has(room) {
			return fmt.Errorf("nats: room %.40q is not watched (WatchRoom first)", room)
		}
		b.heldMu.Lock()
		_, held := b.heldSet[room]
		changed := b.heldCh
		b.heldMu.Unlock()
		var poll <-chan time.Time
		if held {
			if b.nc.IsConnected() {
				err := b.nc.FlushWithContext(ctx)
				if err == nil {
					return nil
				}
				cause = err
			} else {
				cause = errors.New("not connected")
			}
			poll = time.After(20 * time.Millisecond)
		} else {
			cause = errors.New("not subscribed yet")
		}
		select {
		case <-changed:
		case <-poll:
		case <-ctx.Done():
			return fmt.Errorf("nats: %s: subscriptions %s and %s not confirmed (%v): %w",
				b.url, b.roomSubject(room), b.liveSubject(room), cause, ctx.Err())
		}
	}
}

// CheckHistory implements broker.HistoryChecker: rooms with history live
// in a JetStream stream, so a server without JetStream (nats-server
// without -js), or an account without it, cannot keep them.
func (b *Broker) CheckHistory(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return nil
	}
	if _, err := b.h.js.AccountInfo(ctx); err != nil {
		if jetStreamDisabled(err) {
			return fmt.Errorf("nats: %s: JetStream is not enabled (history needs nats-server -js): %w", b.url, err)
		}
		return fmt.Errorf("nats: %s: JetStream account: %w", b.url, err)
	}
	return nil
}

// jetStreamDisabled reports whether an account lookup failed because the
// server or the account has no JetStream.
func jetStreamDisabled(err error) bool {
	return errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// checkJetStream tells, once at start, that history and presence will
// not work: a warning, not an error, since a broker without rooms with
// history or presence does not need JetStream.
func (b *Broker) checkJetStream() {
	defer b.wg.Done()
	if !b.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	defer cancel()
	if _, err := b.h.js.AccountInfo(ctx); err != nil && b.ctx.Err() == nil {
		if jetStreamDisabled(err) {
			b.log.Warn("JetStream is not enabled on the server: rooms with history cannot be published or read, "+
				"nor presence written or read (history and presence need nats-server -js)", "url", b.url)
			return
		}
		b.log.Warn("JetStream account not readable: rooms with history and presence may fail", "url", b.url, "err", err)
	}
}

// jsSubjectOverlap is JetStream's error code for a new stream whose
// subjects an existing one takes. Two nodes creating the same stream at
// the same moment can get it: the second create sees the first's subjects
// before its name.
const jsSubjectOverlap = 10065

// jsStreamCreate is JetStream's error code for a create that failed in
// the server. nats-server 2.9 answers so ("error creating store for
// stream") to one of several nodes creating the same stream at the same
// moment, so it is taken as created elsewhere: the stream is looked up
// again, and a create that keeps failing (a full disk) is reported after
// the few attempts a lost race gets.
const jsStreamCreate = 10049

// createdElsewhere reports whether err, from creating a stream or a
// bucket, means that another node made it first, or is making it.
func createdElsewhere(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jsSubjectOverlap || api.ErrorCode == jsStreamCreate)
}

// pause waits a little longer at each attempt for another node's create
// to complete, or until ctx ends.
func pause(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(attempt+1) * 10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
