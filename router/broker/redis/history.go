package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/router/broker"
)

// History in Redis: per room, a hash PREFIX:hist:ROOM:m with the last
// offset ("top"), the epoch and, per node, the id of the last publish it
// applied (so that a batch retried after a lost reply is not applied
// twice), and a stream PREFIX:hist:ROOM:s whose entry ids are the offsets.
// One script assigns the offset, appends, trims, sets the expiry and
// publishes on the room's channel, atomically: Redis runs one script at a
// time, so channel order is offset order on every node.

// publishScript's arguments: KEYS meta, stream; ARGV head (version, op,
// flags, code of the wire form), mid (its origin..reason fields), data,
// size, ttl in ms, a fresh epoch, node, publish id, stamp ("1" or "0"),
// channel. It returns {offset, epoch}.
var publishScript = goredis.NewScript(`
local function uvarint(n)
  local t = {}
  while n >= 128 do
    t[#t + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  t[#t + 1] = string.char(n)
  return table.concat(t)
end
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
end
local pk = 'p:' .. ARGV[7]
local last = tonumber(redis.call('HGET', meta, pk) or '0')
if last >= tonumber(ARGV[8]) then
  return {tonumber(redis.call('HGET', meta, 'top')), epoch}
end
local off = redis.call('HINCRBY', meta, 'top', 1)
redis.call('HSET', meta, pk, ARGV[8])
local data = ARGV[3]
if ARGV[9] == '1' and #data >= 2 and string.sub(data, 1, 1) == '{' and string.sub(data, -1) == '}' then
  local head = '{"offset":' .. string.format('%d', off) .. ',"epoch":"' .. epoch .. '"'
  if string.find(string.sub(data, 2, -2), '%S') then
    data = head .. ',' .. string.sub(data, 2)
  else
    data = head .. '}'
  end
end
local msg = ARGV[1] .. uvarint(off) .. ARGV[2] .. uvarint(#epoch) .. epoch .. data
redis.call('XADD', stream, 'MAXLEN', ARGV[4], off .. '-1', 'm', msg)
redis.call('PEXPIRE', stream, ARGV[5])
redis.call('PEXPIRE', meta, ARGV[5])
redis.call('PUBLISH', ARGV[10], msg)
return {off, epoch}
`)

// histReq is one PublishHistory waiting for its turn.
type histReq struct {
	m    broker.Message
	size int
	ttl  time.Duration
	id   uint64
	done chan histResult // buffered: the publisher never waits for the caller
}

type histResult struct {
	pos broker.Position
	err error
}

// retryEvery is the pause between attempts to publish a queued batch
// while Redis is away.
const retryEvery = 250 * time.Millisecond

// PublishHistory implements broker.History. Requests go through one
// queue and one goroutine, so one node's messages keep their order even
// across an outage; the caller waits for its offset only while Redis is
// connected.
func (b *Broker) PublishHistory(ctx context.Context, m broker.Message, size int, ttl time.Duration) (broker.Position, error) {
	req := &histReq{m: m, size: size, ttl: ttl, done: make(chan histResult, 1)}
	select {
	case b.histQ <- req:
	default:
		b.histDropped.Add(1)
		b.logDrop()
		return broker.Position{}, broker.ErrDropped
	}
	if !b.connected.Load() {
		return broker.Position{}, broker.ErrQueued
	}
	select {
	case r := <-req.done:
		return r.pos, r.err
	case <-ctx.Done():
		return broker.Position{}, broker.ErrQueued
	}
}

// publishHistory runs the history queue: batches in one pipeline, a batch
// that met a connection error retried whole until Redis is back (the
// per-node publish id makes the retry idempotent).
func (b *Broker) publishHistory() {
	defer b.wg.Done()
	batch := make([]*histReq, 0, maxBatch)
	for {
		select {
		case r := <-b.histQ:
			batch = append(batch[:0], r)
		case <-b.stop:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-b.histQ:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		// Ids are handed out here, in queue order, and kept across
		// retries: the script skips an id at or below the last one it
		// applied, so an id taken by the caller could reach Redis after
		// a higher one and be skipped, its message lost.
		for _, r := range batch {
			b.histID++
			r.id = b.histID
		}
		for {
			err := b.runHistory(batch)
			if err == nil {
				break
			}
			b.errs.Add(1)
			b.setErr(fmt.Errorf("history publish: %w", err))
			select {
			case <-b.stop:
				for _, r := range batch {
					r.done <- histResult{err: err}
				}
				return
			case <-time.After(retryEvery):
			}
		}
		clear(batch)
	}
}

// runHistory publishes one batch. A connection error returns it for a
// retry; a per-message error (a script error) is that message's answer.
func (b *Broker) runHistory(batch []*histReq) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.Cmd, len(batch))
	// The epoch a room takes if it has none: one per batch is enough (an
	// epoch tells one room's histories apart, not rooms), and saves a
	// random read per message.
	epoch := broker.NewEpoch()
	for i, r := range batch {
		keys, args := b.historyArgs(r, epoch)
		cmds[i] = publishScript.EvalSha(ctx, pipe, keys, args...)
	}
	_, err := pipe.Exec(ctx)
	if err != nil && isNoScript(err) {
		if err := publishScript.Load(ctx, b.client).Err(); err != nil {
			if !isReplyError(err) {
				return err
			}
			// Refused (an ACL without SCRIPT): every request's answer,
			// not a batch to retry forever.
			b.errs.Add(uint64(len(batch)))
			for _, r := range batch {
				r.done <- histResult{err: fmt.Errorf("history of %q: SCRIPT LOAD: %w", r.m.Room, err)}
			}
			return nil
		}
		return b.runHistory(batch)
	}
	if err != nil && !isReplyError(err) {
		return err
	}
	for i, r := range batch {
		res, err := cmds[i].Slice()
		var pos broker.Position
		if err == nil && len(res) == 2 {
			off, _ := res[0].(int64)
			ep, _ := res[1].(string)
			pos = broker.Position{Offset: uint64(off), Epoch: ep}
		} else if err == nil {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err != nil {
			b.errs.Add(1)
			err = fmt.Errorf("history of %q: %w", r.m.Room, err)
		} else {
			b.publishes.Add(1)
		}
		r.done <- histResult{pos, err}
	}
	return nil
}

func (b *Broker) historyArgs(r *histReq, epoch string) ([]string, []any) {
	m := &r.m
	// The wire form, cut where the script puts the offset and the epoch.
	head := broker.AppendWireHead(nil, m)
	mid := broker.AppendWireFields(nil, m)
	stamp := "0"
	if m.Stamp {
		stamp = "1"
	}
	ttl := max(r.ttl.Milliseconds(), 1)
	return []string{b.histKey(m.Room, "m"), b.histKey(m.Room, "s")},
		[]any{head, mid, m.Data, r.size, ttl, epoch, b.node, r.id, stamp, b.roomChannel(m.Room)}
}

// probeRoom is the room CheckHistory writes and reads: a name no script
// is likely to use, kept for a second.
const probeRoom = "\x00moonwire-probe"

// CheckHistory implements broker.HistoryChecker: one broadcast with
// history and one read, on a probe room, through the same script and
// commands as every other (EVALSHA, and inside it HSET, HINCRBY, XADD,
// PEXPIRE, PUBLISH; MULTI, HMGET, XRANGE to read), so that a user whose
// ACL forbids one, or a Redis without streams, is refused at start.
func (b *Broker) CheckHistory(ctx context.Context) error {
	if !b.connected.Load() {
		return nil
	}
	m := broker.Message{Op: broker.OpBroadcast, Origin: b.node, Room: probeRoom}
	if _, err := b.PublishHistory(ctx, m, 1, time.Second); err != nil {
		if errors.Is(err, broker.ErrQueued) {
			return nil // lost the connection meanwhile: use will tell
		}
		return fmt.Errorf("redis: %s: history needs EVALSHA, HSET, HINCRBY, XADD, PEXPIRE and PUBLISH on %s:hist:*: %w",
			redact(b.opts.URL), b.opts.Prefix, err)
	}
	if _, _, _, err := b.ReadHistory(ctx, probeRoom, 0, 1); err != nil {
		return fmt.Errorf("redis: %s: history needs MULTI, HMGET and XRANGE on %s:hist:*: %w",
			redact(b.opts.URL), b.opts.Prefix, err)
	}
	return nil
}

// ReadHistory implements broker.History.
func (b *Broker) ReadHistory(ctx context.Context, room string, since uint64, limit int) ([]broker.Entry, broker.Position, uint64, error) {
	if limit <= 0 {
		return nil, broker.Position{}, 0, nil
	}
	meta, stream := b.histKey(room, "m"), b.histKey(room, "s")
	var (
		hm     *goredis.SliceCmd
		rng    *goredis.XMessageSliceCmd
		oldest *goredis.XMessageSliceCmd
	)
	// One transaction: the position, the entries and the oldest agree.
	_, err := b.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		hm = p.HMGet(ctx, meta, "top", "epoch")
		rng = p.XRangeN(ctx, stream, strconv.FormatUint(since+1, 10)+"-0", "+", int64(limit))
		oldest = p.XRangeN(ctx, stream, "-", "+", 1)
		return nil
	})
	if err != nil {
		return nil, broker.Position{}, 0, fmt.Errorf("history of %q: %w", room, err)
	}
	var pos broker.Position
	if v := hm.Val(); len(v) == 2 && v[0] != nil && v[1] != nil {
		top, _ := strconv.ParseUint(fmt.Sprint(v[0]), 10, 64)
		pos = broker.Position{Offset: top, Epoch: fmt.Sprint(v[1])}
	}
	if pos.Epoch == "" {
		return nil, broker.Position{}, 0, nil // never written, or expired
	}
	var first uint64
	if o := oldest.Val(); len(o) == 1 {
		first = idOffset(o[0].ID)
	}
	entries := make([]broker.Entry, 0, len(rng.Val()))
	for _, x := range rng.Val() {
		s, _ := x.Values["m"].(string)
		m, err := broker.DecodeWire([]byte(s))
		if err != nil {
			return nil, pos, first, fmt.Errorf("history of %q: entry %s: %w", room, x.ID, err)
		}
		entries = append(entries, broker.Entry{Offset: m.Offset, Binary: m.Binary, Data: m.Data})
	}
	return entries, pos, first, nil
}

// WaitWatched implements broker.History: it returns once Redis has
// confirmed this node's subscription to the room's channel.
func (b *Broker) WaitWatched(ctx context.Context, room string) error {
	if !b.want.Has(room) {
		return fmt.Errorf("room %q is not watched", room)
	}
	ch := b.roomChannel(room)
	b.mu.Lock()
	if b.confirmed == nil {
		b.confirmed = map[string]chan struct{}{}
	}
	c := b.confirmed[ch]
	if c == nil {
		c = make(chan struct{})
		b.confirmed[ch] = c
	}
	b.mu.Unlock()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("subscription to %s not confirmed: %w", ch, ctx.Err())
	}
}

// confirm records Redis's answer to a SUBSCRIBE.
func (b *Broker) confirm(s *goredis.Subscription) {
	if s.Kind != "subscribe" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.confirmed == nil {
		b.confirmed = map[string]chan struct{}{}
	}
	c := b.confirmed[s.Channel]
	if c == nil {
		c = make(chan struct{})
		b.confirmed[s.Channel] = c
	}
	select {
	case <-c:
	default:
		close(c)
	}
}

// unconfirm forgets confirmations of channels about to be subscribed or
// unsubscribed again; waiters already waiting keep their channel.
func (b *Broker) unconfirm(chs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range chs {
		if c := b.confirmed[ch]; c != nil {
			select {
			case <-c:
				delete(b.confirmed, ch)
			default:
			}
		}
	}
}

func (b *Broker) histKey(room, part string) string {
	return b.opts.Prefix + ":hist:" + room + ":" + part
}

// idOffset reads the offset from a stream id "OFFSET-1".
func idOffset(id string) uint64 {
	s, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

// isReplyError tells an error Redis answered (the connection is fine)
// from one of the connection.
func isReplyError(err error) bool {
	var re goredis.Error
	return errors.As(err, &re)
}

var _ broker.History = (*Broker)(nil)
