package redis

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/router/broker"
)

// Presence in Redis: per room and node, a hash PREFIX:pres:ROOM:NODE of
// connection id -> info, and per room a sorted set PREFIX:presn:ROOM of
// the nodes with members, scored by when their entry expires. A live node
// refreshes both every third of the TTL; a dead node's hash expires and
// its score falls behind the clock, so its members vanish within the TTL
// without anyone cleaning up after it.

// presOp is one local join or leave on its way to Redis.
type presOp struct {
	room, conn string
	info       []byte
	leave      bool
}

// presence is the node's own members, kept to refresh them and to write
// them again after Redis lost them (a restart).
type presence struct {
	mu      sync.Mutex
	members map[string]map[string][]byte // room -> conn -> info
	q       chan presOp
	dropped bool // an op was dropped: rewrite everything at the next refresh
}

// readScript returns the members of a room: KEYS[1] the node set; ARGV
// now (ms), the hash key prefix, and "count" to return only their number.
var readScript = goredis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1)
if ARGV[3] == 'count' then
  local n = 0
  for _, node in ipairs(nodes) do n = n + redis.call('HLEN', ARGV[2] .. node) end
  return n
end
local out = {}
for _, node in ipairs(nodes) do
  local h = redis.call('HGETALL', ARGV[2] .. node)
  for i = 1, #h do out[#out + 1] = h[i] end
end
return out
`)

func (b *Broker) presenceTTL() time.Duration {
	if b.opts.PresenceTTL > 0 {
		return b.opts.PresenceTTL
	}
	return 15 * time.Second
}

// PresenceJoin implements broker.Presence.
func (b *Broker) PresenceJoin(room, conn string, info []byte) {
	p := &b.pres
	p.mu.Lock()
	if p.members == nil {
		p.members = map[string]map[string][]byte{}
	}
	m := p.members[room]
	if m == nil {
		m = map[string][]byte{}
		p.members[room] = m
	}
	m[conn] = info
	p.mu.Unlock()
	b.presPush(presOp{room: room, conn: conn, info: info})
}

// PresenceLeave implements broker.Presence.
func (b *Broker) PresenceLeave(room, conn string) {
	p := &b.pres
	p.mu.Lock()
	if m := p.members[room]; m != nil {
		delete(m, conn)
		if len(m) == 0 {
			delete(p.members, room)
		}
	}
	p.mu.Unlock()
	b.presPush(presOp{room: room, conn: conn, leave: true})
}

func (b *Broker) presPush(op presOp) {
	select {
	case b.pres.q <- op:
	default:
		// Full (Redis slow or away): the refresh writes the whole set.
		b.pres.mu.Lock()
		b.pres.dropped = true
		b.pres.mu.Unlock()
	}
}

// Members implements broker.Presence.
func (b *Broker) Members(ctx context.Context, room string) (map[string][]byte, error) {
	v, err := readScript.Run(ctx, b.client, []string{b.presNodes(room)},
		time.Now().UnixMilli(), b.presKey(room, ""), "all").StringSlice()
	if err != nil {
		return nil, fmt.Errorf("presence of %q: %w", room, err)
	}
	out := make(map[string][]byte, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		var info []byte
		if v[i+1] != "" {
			info = []byte(v[i+1])
		}
		out[v[i]] = info
	}
	return out, nil
}

// Count implements broker.Presence.
func (b *Broker) Count(ctx context.Context, room string) (int, error) {
	n, err := readScript.Run(ctx, b.client, []string{b.presNodes(room)},
		time.Now().UnixMilli(), b.presKey(room, ""), "count").Int()
	if err != nil {
		return 0, fmt.Errorf("presence of %q: %w", room, err)
	}
	return n, nil
}

// presenceLoop writes joins and leaves as they come, in batches, and
// refreshes the node's entries every third of the TTL; after Redis came
// back (or an op was dropped) the refresh writes every member again.
func (b *Broker) presenceLoop() {
	defer b.wg.Done()
	ttl := b.presenceTTL()
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	batch := make([]presOp, 0, maxBatch)
	wasConnected := b.connected.Load()
	for {
		select {
		case <-b.stop:
			// The router left every room before closing the broker: write
			// those leaves, so that a node that stops cleanly vanishes at
			// once rather than after the TTL.
			batch = batch[:0]
			for {
				select {
				case op := <-b.pres.q:
					batch = append(batch, op)
					if len(batch) < maxBatch {
						continue
					}
				default:
				}
				if len(batch) > 0 {
					_ = b.writePresence(batch, ttl)
					batch = batch[:0]
					continue
				}
				return
			}
		case op := <-b.pres.q:
			batch = append(batch[:0], op)
		fill:
			for len(batch) < maxBatch {
				select {
				case op := <-b.pres.q:
					batch = append(batch, op)
				default:
					break fill
				}
			}
			if err := b.writePresence(batch, ttl); err != nil {
				b.pres.mu.Lock()
				b.pres.dropped = true
				b.pres.mu.Unlock()
			}
			clear(batch)
		case <-tick.C:
			now := b.connected.Load()
			b.pres.mu.Lock()
			full := b.pres.dropped || (now && !wasConnected)
			b.pres.dropped = false
			b.pres.mu.Unlock()
			wasConnected = now
			if err := b.refreshPresence(ttl, full); err != nil {
				b.pres.mu.Lock()
				b.pres.dropped = true
				b.pres.mu.Unlock()
			}
		}
	}
}

func (b *Broker) writePresence(ops []presOp, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	pipe := b.client.Pipeline()
	exp := time.Now().Add(ttl).UnixMilli()
	for _, op := range ops {
		h := b.presKey(op.room, b.node)
		if op.leave {
			pipe.HDel(ctx, h, op.conn)
			continue
		}
		pipe.HSet(ctx, h, op.conn, op.info)
		pipe.PExpire(ctx, h, ttl)
		pipe.ZAdd(ctx, b.presNodes(op.room), goredis.Z{Score: float64(exp), Member: b.node})
		pipe.PExpire(ctx, b.presNodes(op.room), ttl)
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		b.errs.Add(1)
		b.setErr(fmt.Errorf("presence: %w", err))
	}
	return err
}

// refreshPresence extends the node's entries (full: writes them again).
func (b *Broker) refreshPresence(ttl time.Duration, full bool) error {
	b.pres.mu.Lock()
	rooms := make(map[string]map[string][]byte, len(b.pres.members))
	for r, m := range b.pres.members {
		if full {
			c := make(map[string][]byte, len(m))
			for k, v := range m {
				c[k] = v
			}
			rooms[r] = c
		} else {
			rooms[r] = nil
		}
	}
	b.pres.mu.Unlock()
	if len(rooms) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	exp := time.Now().Add(ttl).UnixMilli()
	pipe := b.client.Pipeline()
	n := 0
	for r, m := range rooms {
		h := b.presKey(r, b.node)
		if full {
			pipe.Del(ctx, h)
			args := make([]any, 0, 2*len(m))
			for k, v := range m {
				args = append(args, k, v)
			}
			pipe.HSet(ctx, h, args...)
		}
		pipe.PExpire(ctx, h, ttl)
		pipe.ZAdd(ctx, b.presNodes(r), goredis.Z{Score: float64(exp), Member: b.node})
		pipe.PExpire(ctx, b.presNodes(r), ttl)
		if n++; n%maxBatch == 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (b *Broker) presKey(room, node string) string {
	return b.opts.Prefix + ":pres:" + strconv.Itoa(len(room)) + ":" + room + ":" + node
}

func (b *Broker) presNodes(room string) string { return b.opts.Prefix + ":presn:" + room }

var _ broker.Presence = (*Broker)(nil)
