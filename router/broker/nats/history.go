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
// read while nobody else writes. Nats-Msg-Id, one per broadcast and kept
// across retries and the outage queue, makes the retry of a publish that
// was stored but not acknowledged a duplicate the server drops (within the
// stream's duplicate window).
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
// to opts.Outbox broadcasts, and a goroutine appends them on reconnect.

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
	// message sequences back from the last message (one direct get each);
	// a longer one reads the room's subject with a short-lived consumer.
	walkMax   = 16
	readBatch = 256
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

	qmu      sync.Mutex
	q        []queued
	qcap     int
	qdropped atomic.Uint64
	wake     chan struct{}
}

// queued is a broadcast waiting for its append.
type queued struct {
	m    broker.Message
	size int
	ttl  time.Duration
	id   string // Nats-Msg-Id
}

// lastMsg is what an append needs of a room's last message.
type lastMsg struct {
	seq    uint64 // 0: the room has none
	offset uint64
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
	for range 8 {
		st, err := h.js.Stream(ctx, h.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if size == 0 {
				return nil, errNoStream
			}
			st, err = h.js.CreateStream(ctx, b.streamConfig(size, ttl))
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // another node created it first
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

// PublishHistory implements broker.History.
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
	it := queued{m: m, size: size, ttl: ttl, id: b.h.idPrefix + strconv.FormatUint(b.h.ids.Add(1), 36)}
	// Behind a queue that is not empty, even when connected again: one
	// node's broadcasts keep their order.
	if done, err := b.enqueue(&it, false); done {
		return broker.Position{}, err
	}
	actx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	pos, err := b.appendOnce(actx, &it)
	cancel()
	if err == nil {
		return pos, nil
	}
	if (unreachable(err) || !b.nc.IsConnected()) && !errors.Is(ctx.Err(), context.Canceled) && !b.closed.Load() {
		// Perhaps stored and unacknowledged: the queued retry has the same
		// Nats-Msg-Id, which the server recognises.
		_, qerr := b.enqueue(&it, true)
		if n, ok := b.pubLog.allow(); ok {
			b.log.Warn("broadcast with history not acknowledged, queued", "room", m.Room, "not_logged", n, "err", err)
		}
		return broker.Position{}, qerr
	}
	b.errs.Add(1)
	b.setErr(err)
	return broker.Position{}, err
}

// enqueue queues it when the connection is down or the queue holds
// anything (always with force), returning ErrQueued, or ErrDropped when
// the queue is full; done is false when it should be appended now.
func (b *Broker) enqueue(it *queued, force bool) (done bool, err error) {
	h := b.h
	h.qmu.Lock()
	defer h.qmu.Unlock()
	if !force && len(h.q) == 0 && b.nc.IsConnected() {
		return false, nil
	}
	if len(h.q) >= h.qcap {
		h.qdropped.Add(1)
		if held, ok := b.dropLog.allow(); ok {
			b.log.Warn("broker unreachable and history queue full, broadcasts dropped", "dropped", held+1,
				"queue", h.qcap, "room", it.m.Room)
		}
		return true, broker.ErrDropped
	}
	it.m.Data = append([]byte(nil), it.m.Data...) // the caller's buffer is theirs again
	h.q = append(h.q, *it)
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
	return len(h.q)
}

// drain appends the queued broadcasts, oldest first, while connected. An
// entry leaves the queue only once appended (or given up), so that
// PublishHistory keeps queueing behind it until then.
func (b *Broker) drain() {
	defer b.wg.Done()
	h := b.h
	fails := 0
	for {
		h.qmu.Lock()
		var it queued
		ok := len(h.q) > 0
		if ok {
			it = h.q[0]
		}
		h.qmu.Unlock()
		var pause <-chan time.Time
		switch {
		case !ok:
			// Wait for a broadcast.
		case !b.nc.IsConnected():
			pause = time.After(retryEvery) // and for the reconnect's poke
		default:
			if pause = b.drainOne(&it, &fails); pause == nil {
				h.qmu.Lock()
				h.q[0] = queued{}
				h.q = h.q[1:]
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
func (b *Broker) drainOne(it *queued, fails *int) <-chan time.Time {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	_, err := b.appendOnce(ctx, it)
	cancel()
	switch {
	case err == nil:
		*fails = 0
		return nil
	case b.ctx.Err() != nil || unreachable(err) || !b.nc.IsConnected():
		return time.After(reconnectWait)
	}
	if *fails++; *fails < drainTries {
		if n, ok := b.retryLog.allow(); ok {
			b.log.Warn("queued broadcast with history failed, retrying", "room", it.m.Room, "not_logged", n, "err", err)
		}
		return time.After(retryEvery)
	}
	*fails = 0
	b.errs.Add(1)
	b.setErr(err)
	b.log.Error("queued broadcast with history dropped", "room", it.m.Room, "attempts", drainTries, "err", err)
	return nil
}

// appendOnce appends one broadcast: it returns once the stream has it, or
// with the error that stopped it.
func (b *Broker) appendOnce(ctx context.Context, it *queued) (broker.Position, error) {
	h := b.h
	m := it.m
	subj := b.histSubject(m.Room)
	st, err := b.stream(ctx, it.size, it.ttl)
	if err != nil {
		return broker.Position{}, err
	}
	lock := &h.locks[maphash.String(h.seed, subj)%lockStripes]
	lock.Lock()
	defer lock.Unlock()

	last, known := h.cachedLast(subj)
	refound := false
	for races := 0; ; {
		if !known {
			last, err = b.readLast(ctx, st, subj)
			if err != nil && noStream(err) && !refound {
				refound = true
				h.forgetStream()
				if st, err = b.stream(ctx, it.size, it.ttl); err != nil {
					return broker.Position{}, err
				}
				continue
			}
			if err != nil {
				return broker.Position{}, b.jsErr(fmt.Sprintf("stream %s: read the last message of %s", h.name, subj), err)
			}
			known = true
		}
		now := time.Now()
		pos, prev, oldest := broker.Position{Offset: 1, Epoch: broker.NewEpoch()}, uint64(0), uint64(1)
		if last.seq != 0 && !last.expired(now) {
			pos, prev, oldest = broker.Position{Offset: last.offset + 1, Epoch: last.epoch}, last.seq, last.oldest
		}
		if pos.Offset > uint64(it.size) {
			oldest = max(oldest, pos.Offset-uint64(it.size)+1)
		}
		m.Offset, m.Epoch, m.Data = pos.Offset, pos.Epoch, it.m.Data
		if m.Stamp {
			m.Data = broker.Stamp(m.Data, pos)
		}
		msg := &natsgo.Msg{Subject: subj, Data: broker.AppendWire(nil, &m), Header: natsgo.Header{
			jetstream.MsgIDHeader:               {it.id},
			jetstream.ExpectedStreamHeader:      {h.name},
			jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(last.seq, 10)},
			hdrOffset:                           {strconv.FormatUint(pos.Offset, 10)},
			hdrEpoch:                            {pos.Epoch},
			hdrOldest:                           {strconv.FormatUint(oldest, 10)},
			hdrTTL:                              {strconv.FormatInt(it.ttl.Milliseconds(), 10)},
			hdrPrev:                             {strconv.FormatUint(prev, 10)},
		}}
		gen := h.gen.Load()
		ack, err := h.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
		switch {
		case err == nil && ack.Duplicate:
			// An earlier try of this broadcast was stored: its position
			// is the one to report.
			h.forgetLast(subj)
			b.publishes.Add(1)
			stored, err := st.GetMsg(ctx, ack.Sequence)
			if err != nil {
				return broker.Position{}, b.jsErr(fmt.Sprintf("stream %s: broadcast stored as %d on %s, but read it back", h.name, ack.Sequence, subj), err)
			}
			l, err := parseLast(stored)
			if err != nil {
				return broker.Position{}, fmt.Errorf("nats: stream %s: %w", h.name, err)
			}
			return broker.Position{Offset: l.offset, Epoch: l.epoch}, nil
		case err == nil:
			b.publishes.Add(1)
			h.remember(subj, lastMsg{seq: ack.Sequence, offset: pos.Offset, epoch: pos.Epoch, oldest: oldest,
				ttl: it.ttl, at: now, prev: prev, gen: gen})
			if pos.Offset == 1 && last.seq != 0 {
				// A new epoch: the older one's entries are of no use.
				if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(ack.Sequence)); err != nil {
					b.log.Warn("history: old epoch not purged (read skips it)", "stream", h.name, "subject", subj, "err", err)
				}
			}
			return pos, nil
		case apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequence || apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			// Another append came first.
			known = false
			if races++; races >= maxRaces {
				return broker.Position{}, fmt.Errorf("nats: stream %s: %s: lost %d races to other appends, giving up: %w", h.name, subj, races, err)
			}
			if races > 2 {
				time.Sleep(time.Duration(mrand.Int64N(int64(min(races, 20)) * int64(100*time.Microsecond))))
			}
		case noStream(err) && !refound:
			refound, known = true, false
			h.forgetStream()
			if st, err = b.stream(ctx, it.size, it.ttl); err != nil {
				return broker.Position{}, err
			}
		default:
			return broker.Position{}, b.jsErr(fmt.Sprintf("stream %s: publish to %s", h.name, subj), err)
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

// readLast returns the room's last message (seq 0: none).
func (b *Broker) readLast(ctx context.Context, st jetstream.Stream, subj string) (lastMsg, error) {
	raw, err := st.GetLastMsgForSubject(ctx, subj)
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
	var err1, err2, err3, err4 error
	l.offset, err1 = strconv.ParseUint(raw.Header.Get(hdrOffset), 10, 64)
	l.oldest, err2 = strconv.ParseUint(raw.Header.Get(hdrOldest), 10, 64)
	ms, err3 := strconv.ParseInt(raw.Header.Get(hdrTTL), 10, 64)
	l.prev, err4 = strconv.ParseUint(raw.Header.Get(hdrPrev), 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil || l.epoch == "" || l.offset == 0 || l.oldest == 0 || l.oldest > l.offset {
		return lastMsg{}, fmt.Errorf("message %d on %s is not a moonwire history entry (headers %s, %s, %s, %s, %s): %v",
			raw.Sequence, raw.Subject, hdrOffset, hdrEpoch, hdrOldest, hdrTTL, hdrPrev, err)
	}
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
	raw, err := st.GetLastMsgForSubject(ctx, subj)
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
	firstRaw, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
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
	if first.epoch == top.Epoch && first.offset > oldest {
		oldest = first.offset
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
		es, err = b.scan(ctx, st, subj, first.seq, last.seq, top.Epoch, from, to)
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

// walkBack follows the previous-message sequences from the last message
// down to offset from, and returns the entries from..to (or those above
// the first one it could not reach).
func (b *Broker) walkBack(ctx context.Context, st jetstream.Stream, raw *jetstream.RawStreamMsg, cur lastMsg, from, to uint64) ([]broker.Entry, error) {
	rev := make([]broker.Entry, 0, cur.offset-from+1)
	for {
		if cur.offset <= to {
			e, err := entryOf(raw, cur.offset)
			if err != nil {
				return nil, err
			}
			rev = append(rev, e)
		}
		if cur.offset <= from || cur.prev == 0 {
			break
		}
		next, err := st.GetMsg(ctx, cur.prev)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		l, err := parseLast(next)
		if err != nil || next.Subject != raw.Subject || l.epoch != cur.epoch || l.offset != cur.offset-1 {
			break
		}
		raw, cur = next, l
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev, nil
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
	for {
		batch, err := c.FetchNoWait(readBatch)
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
			off, err := strconv.ParseUint(msg.Headers().Get(hdrOffset), 10, 64)
			if err != nil || msg.Headers().Get(hdrEpoch) != epoch || off < from {
				done = done || seq == end
				continue
			}
			if len(es) > 0 && off != es[len(es)-1].Offset+1 {
				es = es[:0] // a gap: what came before is unusable
			}
			if off <= to {
				m, err := broker.DecodeWire(msg.Data())
				if err != nil {
					return nil, fmt.Errorf("message %d on %s: %w", seq, subj, err)
				}
				es = append(es, broker.Entry{Offset: off, Binary: m.Binary, Data: m.Data})
			}
			done = off >= to || seq == end
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("consumer %s on %s: %w", cname, subj, err)
		}
		if done || n == 0 {
			return es, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func entryOf(raw *jetstream.RawStreamMsg, offset uint64) (broker.Entry, error) {
	m, err := broker.DecodeWire(raw.Data)
	if err != nil {
		return broker.Entry{}, fmt.Errorf("message %d on %s: %w", raw.Sequence, raw.Subject, err)
	}
	return broker.Entry{Offset: offset, Binary: m.Binary, Data: m.Data}, nil
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
		if errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
			errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			b.log.Warn("JetStream is not enabled on the server: rooms with history cannot be published or read, "+
				"nor presence written or read (history and presence need nats-server -js)", "url", b.url)
			return
		}
		b.log.Warn("JetStream account not readable: rooms with history and presence may fail", "url", b.url, "err", err)
	}
}
