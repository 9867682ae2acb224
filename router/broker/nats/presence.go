package nats

// Rooms' presence over JetStream KV (broker.Presence).
//
// Layout. One bucket per prefix (bucketName: PREFIX_presence, memory
// storage: presence is soft state that every live node writes again)
// holds two kinds of keys:
//
//   - "nodes": the nodes that publish members, each with its incarnation
//     (random, one per Broker) and the time its entry expires (its clock
//     plus its PresenceTTL). Every such node rewrites it, compare-and-set,
//     every third of its TTL, dropping entries long expired, and removes
//     itself on Close.
//   - ROOM.NODE.PAGE (ROOM and NODE are subject tokens, as in the room
//     subjects; PAGE a number): the node's members of the room, conn id ->
//     info, with the node's incarnation. A page holds up to pageBytes, so
//     that a join rewrites one page and the room's head (page 0) rather
//     than all the node's members of the room, and no value nears the
//     server's max payload. The head also has the node's count of members
//     in the room and the numbers of its other pages; it is written after
//     them, so it names only pages that are stored.
//
// Reading. Members and Count read "nodes" and then, for each live node,
// its head, and Members the pages the head names: each a direct get of a
// literal subject, those of one round in parallel. A page of another
// incarnation (the node restarted under the same id) is ignored. There is
// no wildcard listing (kv.ListKeys or Watch with a filter, a consumer, a
// direct get by next_by_subj): nats-server 2.9 answers those by visiting
// every subject of the stream, tens of milliseconds per call, holding the
// stream's lock, once the bucket has 50,000 keys, where a literal get
// stays at a fraction of a millisecond.
//
// Liveness. A node's members are listed while its entry in "nodes" has
// not expired: a node that dies stops refreshing it and its members
// vanish within PresenceTTL, nobody cleaning up after it. Expiry compares
// the writer's clock with the reader's: clocks must agree to well within
// the TTL. The bucket's max age (presenceAge: minutes) purges what dead
// nodes left behind; live nodes write all their pages again every quarter
// of it.
//
// Writing. PresenceJoin and PresenceLeave record the change in the node's
// own map and queue (bounded) the room and connection; one goroutine lays
// the members out in pages and writes the changed ones, in batches of
// asynchronous publishes. What it writes is always read from the map, so
// that a stale or repeated queue entry is harmless, and after an overflow
// it compares the whole map with what it wrote. After a reconnect, a
// failed write, or finding its entry missing from "nodes" (the server
// lost its store, or the other nodes dropped it after a long outage), it
// writes every page again.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/router/broker"
)

const (
	presNodesKey = "nodes"
	// pageBytes is a page's size budget (less when the server's max
	// payload is small): a member who does not fit goes to another page.
	pageBytes = 32 << 10
	// presReadPar bounds the direct gets one read has in flight.
	presReadPar = 16
	// presCASTries bounds the rewrites of "nodes" lost to other nodes.
	presCASTries = 20
	presFormat   = 1 // first byte of every value
	// presMaxPages bounds the pages a head may name, for a value that is
	// not ours.
	presMaxPages = 1 << 16
	presMinAge   = 2 * time.Minute
	// defaultPresenceTTL applies when opts.PresenceTTL is zero.
	defaultPresenceTTL = 15 * time.Second
	// KV's delete marker (ADR-8), for deletes published asynchronously.
	kvOpHeader = "KV-Operation"
	kvOpDel    = "DEL"
)

// errNoBucket: the presence bucket does not exist (nothing was written).
var errNoBucket = errors.New("presence bucket does not exist")

// presenceAge is the bucket's max age that a node with this ttl needs:
// long enough that writing every page again each quarter of it costs
// little, short enough that what dead nodes left is purged soon.
func presenceAge(ttl time.Duration) time.Duration { return max(20*ttl, presMinAge) }

func (b *Broker) presenceTTL() time.Duration {
	if b.opts.PresenceTTL > 0 {
		return b.opts.PresenceTTL
	}
	return defaultPresenceTTL
}

// presence is the node's own members and the writer's inputs.
type presence struct {
	mu      sync.Mutex
	members map[string]map[string][]byte // room -> conn -> info
	dropped bool                         // the queue overflowed: compare everything
	node    string                       // set by Subscribe

	q    chan presOp
	wake chan struct{} // look now: a reconnect, an overflow, the node id
	js   jetstream.JetStream
	name string // the bucket
	inc  string // this Broker's incarnation

	// ctx ends when Close begins; deadline is Close's, set before.
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time

	kvMu   sync.Mutex
	kv     jetstream.KeyValue
	kvGen  uint64
	kvAged bool // its max age was checked (by the writer)

	// abandon makes the writer stop at Close without removing anything,
	// as a node that dies would: for tests.
	abandon atomic.Bool
}

// presOp says that a member of a room changed; the writer reads what it
// is now from the map.
type presOp struct{ room, conn string }

func newPresence(prefix string, queue int) presence {
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	ctx, cancel := context.WithCancel(context.Background())
	return presence{
		q:      make(chan presOp, max(queue, 1)),
		wake:   make(chan struct{}, 1),
		name:   bucketName(prefix),
		inc:    hex.EncodeToString(inc[:]),
		ctx:    ctx,
		cancel: cancel,
	}
}

func (p *presence) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *presence) nodeID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.node
}

func (p *presence) setNode(node string) {
	p.mu.Lock()
	p.node = node
	p.mu.Unlock()
	p.poke()
}

// PresenceJoin implements broker.Presence.
func (b *Broker) PresenceJoin(room, conn string, info []byte) {
	if b.closed.Load() {
		return
	}
	p := &b.pres
	p.mu.Lock()
	if p.members == nil {
		p.members = make(map[string]map[string][]byte)
	}
	m := p.members[room]
	if m == nil {
		m = make(map[string][]byte)
		p.members[room] = m
	}
	m[conn] = info
	p.mu.Unlock()
	b.presPush(room, conn)
}

// PresenceLeave implements broker.Presence.
func (b *Broker) PresenceLeave(room, conn string) {
	if b.closed.Load() {
		return
	}
	p := &b.pres
	p.mu.Lock()
	if m := p.members[room]; m != nil {
		delete(m, conn)
		if len(m) == 0 {
			delete(p.members, room)
		}
	}
	p.mu.Unlock()
	b.presPush(room, conn)
}

func (b *Broker) presPush(room, conn string) {
	select {
	case b.pres.q <- presOp{room, conn}:
	default:
		// Full (NATS slow or away): the writer compares the whole map.
		b.pres.mu.Lock()
		b.pres.dropped = true
		b.pres.mu.Unlock()
		b.pres.poke()
	}
}

// Members implements broker.Presence.
func (b *Broker) Members(ctx context.Context, room string) (map[string][]byte, error) {
	m, _, err := b.presRead(ctx, room, true)
	return m, err
}

// Count implements broker.Presence. It reads only the heads, which carry
// each node's count.
func (b *Broker) Count(ctx context.Context, room string) (int, error) {
	_, n, err := b.presRead(ctx, room, false)
	return n, err
}

func (b *Broker) presRead(ctx context.Context, room string, all bool) (map[string][]byte, int, error) {
	if b.closed.Load() {
		return nil, 0, errClosed
	}
	if !b.nc.IsConnected() {
		// nats.go would hold the request until the reconnect or the
		// deadline: a question about now is better answered at once.
		return nil, 0, fmt.Errorf("nats: %s: presence of room %.40q: %w", b.url, room, natsgo.ErrDisconnected)
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	for try := 0; ; try++ {
		kv, _, err := b.presBucket(ctx, false)
		if errors.Is(err, errNoBucket) {
			return map[string][]byte{}, 0, nil
		}
		var m map[string][]byte
		var n int
		if err == nil {
			m, n, err = b.readRoom(ctx, kv, room, all)
			if err != nil && noStream(err) && try == 0 {
				b.presForget() // the server lost it: look again
				continue
			}
			if err != nil {
				err = fmt.Errorf("bucket %s: %w", b.pres.name, err)
			}
		}
		if err != nil {
			return nil, 0, b.jsErr(fmt.Sprintf("presence of room %.40q", room), err)
		}
		return m, n, nil
	}
}

// readRoom reads the live nodes, their heads of room and (all) the other
// pages the heads name.
func (b *Broker) readRoom(ctx context.Context, kv jetstream.KeyValue, room string, all bool) (map[string][]byte, int, error) {
	out := map[string][]byte{}
	e, err := kvGet(ctx, kv, presNodesKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return out, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", presNodesKey, err)
	}
	nodes, err := decodeNodes(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("key %s: %w", presNodesKey, err)
	}
	now := time.Now()
	live := nodes[:0]
	for _, n := range nodes {
		if n.exp.After(now) {
			live = append(live, n)
		}
	}
	keys := make([]string, len(live))
	for i, n := range live {
		keys[i] = presKey(room, n.node, 0)
	}
	heads, err := getAll(ctx, kv, keys)
	if err != nil {
		return nil, 0, err
	}
	count := 0
	var more []string
	var moreInc []string
	for i, raw := range heads {
		if raw == nil {
			continue
		}
		pg, err := decodePage(raw, true)
		if err != nil {
			return nil, 0, fmt.Errorf("key %s: %w", keys[i], err)
		}
		if pg.inc != live[i].inc {
			continue // left by an earlier run of the node
		}
		count += pg.count
		if !all {
			continue
		}
		for _, e := range pg.members {
			out[e.conn] = e.info
		}
		for _, no := range pg.pages {
			more = append(more, presKey(room, live[i].node, no))
			moreInc = append(moreInc, pg.inc)
		}
	}
	if !all {
		return nil, count, nil
	}
	pages, err := getAll(ctx, kv, more)
	if err != nil {
		return nil, 0, err
	}
	for i, raw := range pages {
		if raw == nil {
			continue
		}
		pg, err := decodePage(raw, false)
		if err != nil {
			return nil, 0, fmt.Errorf("key %s: %w", more[i], err)
		}
		if pg.inc != moreInc[i] {
			continue
		}
		for _, e := range pg.members {
			out[e.conn] = e.info
		}
	}
	return out, len(out), nil
}

// getAll gets keys, presReadPar at a time; a key that is not there (or
// deleted) gives nil.
func getAll(ctx context.Context, kv jetstream.KeyValue, keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, presReadPar)
	for i, k := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			e, err := kvGet(ctx, kv, k)
			switch {
			case err == nil:
				out[i] = e.Value()
			case !errors.Is(err, jetstream.ErrKeyNotFound):
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("read %s: %w", k, err)
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return out, first
}

// presBucket returns the bucket, looking it up once per connection
// generation; with create (the writer) it creates the bucket or raises its
// max age to what this node needs. created tells that it was just made.
func (b *Broker) presBucket(ctx context.Context, create bool) (kv jetstream.KeyValue, created bool, err error) {
	p := &b.pres
	gen := b.h.gen.Load()
	p.kvMu.Lock()
	defer p.kvMu.Unlock()
	if p.kv != nil && p.kvGen == gen && (p.kvAged || !create) {
		return p.kv, false, nil
	}
	age := presenceAge(b.presenceTTL())
	var createErr error // the last create's, while the bucket is not found
	for attempt := range 8 {
		kv, err := b.h.js.KeyValue(ctx, p.name)
		createErr = nil
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			if !create {
				return nil, false, errNoBucket
			}
			kv, err = b.h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      p.name,
				Description: "moonwire rooms' presence (" + b.prefix + ")",
				History:     1,
				TTL:         age,
				Storage:     jetstream.MemoryStorage,
			})
			if createdElsewhere(err) {
				createErr = err
				if err := pause(ctx, attempt); err != nil {
					return nil, false, fmt.Errorf("create bucket %s: %w", p.name, err)
				}
				continue
			}
			if err != nil {
				return nil, false, fmt.Errorf("create bucket %s: %w", p.name, err)
			}
			b.log.Info("presence bucket created", "bucket", p.name, "max_age", age)
			p.kv, p.kvGen, p.kvAged = kv, gen, true
			return kv, true, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("look up bucket %s: %w", p.name, err)
		}
		if !create {
			p.kv, p.kvGen, p.kvAged = kv, gen, false
			return kv, false, nil
		}
		// The max age only grows, so that no node's pages are purged
		// between its rewrites, whatever TTLs the others have.
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("read the status of bucket %s: %w", p.name, err)
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok || bs.StreamInfo() == nil {
			return nil, false, fmt.Errorf("bucket %s: no stream information", p.name)
		}
		cfg := bs.StreamInfo().Config
		if cfg.MaxAge == 0 || cfg.MaxAge >= age {
			p.kv, p.kvGen, p.kvAged = kv, gen, true
			return kv, false, nil
		}
		cfg.MaxAge = age
		if _, err := b.h.js.UpdateStream(ctx, cfg); err != nil {
			return nil, false, fmt.Errorf("raise the max age of bucket %s to %v: %w", p.name, age, err)
		}
		b.log.Info("presence bucket max age raised", "bucket", p.name, "max_age", age)
	}
	if createErr != nil {
		return nil, false, fmt.Errorf("create bucket %s: %w", p.name, createErr)
	}
	return nil, false, fmt.Errorf("bucket %s: its configuration keeps changing", p.name)
}

// presForget makes the next call look the bucket up again.
func (b *Broker) presForget() {
	b.pres.kvMu.Lock()
	b.pres.kv = nil
	b.pres.kvMu.Unlock()
}

// presKey is the key of a node's page of a room.
func presKey(room, node string, page int) string {
	return token(room) + "." + token(node) + "." + strconv.Itoa(page)
}

// presBudget is a page's size budget.
func (b *Broker) presBudget() int {
	if mp := b.nc.MaxPayload(); mp > 0 {
		return min(pageBytes, int(mp)/2)
	}
	return pageBytes
}

// --- the writer ---

// presWriter is what the writer goroutine laid out and wrote; it is its
// own, so it needs no lock.
type presWriter struct {
	rooms      map[string]*presRoom
	dirty      map[string]struct{}   // rooms with a page to write
	doomed     map[presSlot]struct{} // emptied pages that may be stored: to delete
	registered bool                  // our entry is in "nodes"
}

type presSlot struct {
	room string
	page int
}

type presRoom struct {
	where map[string]int // conn -> page
	pages []*presPage    // [0], the head, exists while the room does; nil: free
	count int
}

type presPage struct {
	conns  map[string][]byte
	size   int
	dirty  bool
	stored bool // may be in the bucket: written (or tried) and not deleted
}

func newPresWriter() *presWriter {
	return &presWriter{
		rooms:  make(map[string]*presRoom),
		dirty:  make(map[string]struct{}),
		doomed: make(map[presSlot]struct{}),
	}
}

func entrySize(conn string, info []byte) int {
	return uvarintLen(len(conn)) + len(conn) + uvarintLen(len(info)) + len(info)
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// apply makes conn's place in room what the map says: absent, or present
// with info.
func (w *presWriter) apply(room, conn string, info []byte, present bool, budget int) {
	r := w.rooms[room]
	if r != nil {
		if no, ok := r.where[conn]; ok {
			pg := r.pages[no]
			old := pg.conns[conn]
			if present && bytes.Equal(old, info) {
				return
			}
			pg.size -= entrySize(conn, old)
			delete(pg.conns, conn)
			delete(r.where, conn)
			r.count--
			w.touch(room, r, no)
			n := entrySize(conn, info)
			if present && (len(pg.conns) == 0 || pg.size+n <= budget) {
				pg.conns[conn], pg.size, r.where[conn] = info, pg.size+n, no
				r.count++
				return
			}
			if no != 0 && len(pg.conns) == 0 {
				w.free(room, r, no)
			}
		}
	}
	if !present {
		if r != nil && r.count == 0 {
			w.dropRoom(room, r)
		}
		return
	}
	if r == nil {
		r = &presRoom{where: make(map[string]int), pages: []*presPage{{conns: make(map[string][]byte)}}}
		w.rooms[room] = r
	}
	n := entrySize(conn, info)
	no, free := -1, -1
	for i, pg := range r.pages {
		if pg == nil {
			if free < 0 {
				free = i
			}
			continue
		}
		if len(pg.conns) == 0 || pg.size+n <= budget {
			no = i
			break
		}
	}
	if no < 0 {
		if no = free; no < 0 {
			no = len(r.pages)
			r.pages = append(r.pages, nil)
		}
		r.pages[no] = &presPage{conns: make(map[string][]byte)}
	}
	pg := r.pages[no]
	pg.conns[conn], pg.size, r.where[conn] = info, pg.size+n, no
	r.count++
	w.touch(room, r, no)
}

// touch marks page no of room and its head (which has the count) dirty.
func (w *presWriter) touch(room string, r *presRoom, no int) {
	r.pages[no].dirty = true
	r.pages[0].dirty = true
	w.dirty[room] = struct{}{}
}

// free gives up a non-head page that emptied; the head, rewritten, no
// longer names it.
func (w *presWriter) free(room string, r *presRoom, no int) {
	if r.pages[no].stored {
		w.doomed[presSlot{room, no}] = struct{}{}
	}
	r.pages[no] = nil
	for len(r.pages) > 1 && r.pages[len(r.pages)-1] == nil {
		r.pages = r.pages[:len(r.pages)-1]
	}
	w.touch(room, r, 0)
}

func (w *presWriter) dropRoom(room string, r *presRoom) {
	for no, pg := range r.pages {
		if pg != nil && pg.stored {
			w.doomed[presSlot{room, no}] = struct{}{}
		}
	}
	delete(w.rooms, room)
	delete(w.dirty, room)
}

// reconcile compares everything with the map, after ops were dropped.
func (w *presWriter) reconcile(members map[string]map[string][]byte, budget int) {
	for room, r := range w.rooms {
		m := members[room]
		for conn := range r.where {
			if _, ok := m[conn]; !ok {
				w.apply(room, conn, nil, false, budget)
			}
		}
	}
	for room, m := range members {
		for conn, info := range m {
			w.apply(room, conn, info, true, budget)
		}
	}
}

func (w *presWriter) markAll() {
	for room, r := range w.rooms {
		for _, pg := range r.pages {
			if pg != nil {
				pg.dirty = true
			}
		}
		w.dirty[room] = struct{}{}
	}
}

// pending tells whether a flush has anything to do.
func (w *presWriter) pending(full, beat bool) bool {
	live := len(w.rooms) > 0
	return len(w.dirty) > 0 || len(w.doomed) > 0 || live != w.registered ||
		(beat && w.registered) || (full && live)
}

// presenceLoop writes the node's members: queued changes as they come,
// in batches; its entry in "nodes" every third of the TTL; every page
// every quarter of the bucket's max age, and after a reconnect or a
// failure. Close ends it (see presLeave).
func (b *Broker) presenceLoop() {
	defer b.wg.Done()
	p := &b.pres
	ttl := b.presenceTTL()
	pageEvery := presenceAge(ttl) / 4
	beatEvery := max(ttl/3, 10*time.Millisecond)
	retryAfter := min(retryEvery, beatEvery)
	beat := time.NewTicker(beatEvery)
	defer beat.Stop()
	w := newPresWriter()
	var (
		retry    <-chan time.Time
		lastFull time.Time
		gen      = b.h.gen.Load()
		full     bool
		beatDue  bool
		batch    = make([]presOp, 0, maxBatch)
	)
	for {
		select {
		case <-p.ctx.Done():
			b.presLeave(w)
			return
		case op := <-p.q:
			batch = append(batch[:0], op)
		fill:
			for len(batch) < maxBatch {
				select {
				case op := <-p.q:
					batch = append(batch, op)
				default:
					break fill
				}
			}
			budget := b.presBudget()
			p.mu.Lock()
			for _, op := range batch {
				info, ok := p.members[op.room][op.conn]
				w.apply(op.room, op.conn, info, ok, budget)
			}
			p.mu.Unlock()
			clear(batch)
		case <-beat.C:
			beatDue = true
		case <-p.wake:
		case <-retry:
			retry = nil
		}
		p.mu.Lock()
		dropped := p.dropped
		if dropped {
			p.dropped = false
			w.reconcile(p.members, b.presBudget())
		}
		node := p.node
		p.mu.Unlock()
		if dropped {
			if n, ok := b.presQLog.allow(); ok {
				b.log.Warn("presence queue full: the writer compared all of this node's members instead",
					"queue", cap(p.q), "not_logged", n)
			}
		}
		if g := b.h.gen.Load(); g != gen {
			// Disconnected, or back: the server may have lost the bucket.
			gen, full, beatDue = g, true, true
		}
		if time.Since(lastFull) >= pageEvery {
			full = true
		}
		if node == "" || retry != nil || !w.pending(full, beatDue) || !b.nc.IsConnected() {
			continue // the reconnect, Subscribe or the retry pokes
		}
		ctx, cancel := context.WithTimeout(p.ctx, b.opts.Timeout)
		start := time.Now()
		err := b.presFlush(ctx, w, node, full, beatDue)
		cancel()
		if err != nil {
			if p.ctx.Err() != nil {
				continue // Close: presLeave next
			}
			if noStream(err) {
				b.presForget()
			}
			full, beatDue = true, true
			retry = time.After(retryAfter)
			err = b.jsErr("presence", err)
			b.errs.Add(1)
			b.setErr(err)
			if n, ok := b.presLog.allow(); ok {
				b.log.Warn("presence write failed, retrying", "bucket", p.name, "not_logged", n, "err", err)
			}
			continue
		}
		if full {
			lastFull = start
		}
		full, beatDue = false, false
	}
}

// presFlush writes what is pending: our entry in "nodes" when due, then
// the deletes and the rooms' pages, then their heads, which name only
// pages that are stored by then.
func (b *Broker) presFlush(ctx context.Context, w *presWriter, node string, full, beat bool) error {
	kv, created, err := b.presBucket(ctx, true)
	if err != nil {
		return err
	}
	full = full || created
	live := len(w.rooms) > 0
	if live != w.registered || (w.registered && (beat || full)) || (live && full) {
		was, err := b.presBeat(ctx, kv, node, live)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b.pres.name, err)
		}
		if live && !was {
			full = true // our pages may be gone with our entry
		}
		w.registered = live
	}
	if full {
		w.markAll()
	}
	var ws []presWrite
	for s := range w.doomed {
		ws = append(ws, presWrite{slot: s})
	}
	for room := range w.dirty {
		r := w.rooms[room]
		for no, pg := range r.pages {
			if no > 0 && pg != nil && pg.dirty {
				ws = append(ws, presWrite{slot: presSlot{room, no}, page: pg})
			}
		}
	}
	err = b.presSend(ctx, w, node, ws)
	ws = ws[:0]
	for room := range w.dirty {
		r := w.rooms[room]
		ready := true
		for no, pg := range r.pages {
			if no > 0 && pg != nil && pg.dirty {
				ready = false // a page failed: the head waits for the retry
				break
			}
		}
		if ready && r.pages[0].dirty {
			ws = append(ws, presWrite{slot: presSlot{room, 0}, page: r.pages[0], room: r})
		}
	}
	if err2 := b.presSend(ctx, w, node, ws); err == nil {
		err = err2
	}
	for room := range w.dirty {
		clean := true
		for _, pg := range w.rooms[room].pages {
			if pg != nil && pg.dirty {
				clean = false
				break
			}
		}
		if clean {
			delete(w.dirty, room)
		}
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", b.pres.name, err)
	}
	return nil
}

// presWrite is one put (page set; room set for a head) or delete.
type presWrite struct {
	slot presSlot
	page *presPage
	room *presRoom
}

// presSend publishes writes asynchronously, maxBatch awaiting their acks
// at a time, and records what succeeded.
func (b *Broker) presSend(ctx context.Context, w *presWriter, node string, ws []presWrite) error {
	subj := "$KV." + b.pres.name + "."
	futs := make([]jetstream.PubAckFuture, 0, min(len(ws), maxBatch))
	var first error
	for len(ws) > 0 {
		chunk := ws[:min(len(ws), maxBatch)]
		ws = ws[len(chunk):]
		futs = futs[:0]
		for _, x := range chunk {
			key := presKey(x.slot.room, node, x.slot.page)
			msg := &natsgo.Msg{Subject: subj + key}
			if x.page == nil {
				msg.Header = natsgo.Header{kvOpHeader: {kvOpDel}}
			} else {
				msg.Data = encodePage(b.pres.inc, x.page, x.room)
				x.page.stored = true // perhaps, from here on
			}
			f, err := b.pres.js.PublishMsgAsync(msg)
			if err != nil && first == nil {
				first = fmt.Errorf("write %s: %w", key, err)
			}
			futs = append(futs, f)
		}
		for i, f := range futs {
			if f == nil {
				continue
			}
			x := chunk[i]
			select {
			case <-f.Ok():
				// A put supersedes an earlier delete of its key.
				delete(w.doomed, x.slot)
				if x.page != nil {
					x.page.dirty = false
				}
			case err := <-f.Err():
				if first == nil {
					first = fmt.Errorf("write %s: %w", presKey(x.slot.room, node, x.slot.page), err)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return first
}

// presBeat rewrites "nodes" with our entry renewed (live) or removed,
// dropping entries that expired a TTL ago. was tells whether our entry
// (this incarnation's) was there.
func (b *Broker) presBeat(ctx context.Context, kv jetstream.KeyValue, node string, live bool) (was bool, err error) {
	ttl := b.presenceTTL()
	for try := 1; ; try++ {
		var rev uint64
		var list []presNode
		e, err := kvGet(ctx, kv, presNodesKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, fmt.Errorf("read %s: %w", presNodesKey, err)
		default:
			rev = e.Revision()
			if list, err = decodeNodes(e.Value()); err != nil {
				b.log.Warn("presence: key unreadable, written anew", "bucket", b.pres.name, "key", presNodesKey, "err", err)
				list = nil
			}
		}
		now := time.Now()
		was, mine := false, false
		out := make([]presNode, 0, len(list)+1)
		for _, n := range list {
			switch {
			case n.node == node:
				// Ours, or an earlier run's: its pages are no longer valid.
				mine = true
				was = was || n.inc == b.pres.inc
			case now.Sub(n.exp) <= ttl:
				out = append(out, n)
			}
		}
		if !live && !mine {
			return was, nil
		}
		if live {
			out = append(out, presNode{node: node, inc: b.pres.inc, exp: now.Add(ttl)})
		}
		val := encodeNodes(out)
		if rev == 0 {
			_, err = kv.Create(ctx, presNodesKey, val)
		} else {
			_, err = kv.Update(ctx, presNodesKey, val, rev)
		}
		if err == nil {
			return was, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("write %s: %w", presNodesKey, err)
		}
		if try >= presCASTries {
			return false, fmt.Errorf("write %s: lost %d races to other nodes: %w", presNodesKey, try, err)
		}
		select { // another node wrote it first: read again
		case <-time.After(time.Duration(mrand.Int64N(int64(try) * int64(time.Millisecond)))):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// presLeave is the writer's last act, at Close: it removes our entry from
// "nodes", so that our members vanish at once, and deletes our pages,
// within Close's deadline. A node that dies does none of this.
func (b *Broker) presLeave(w *presWriter) {
	p := &b.pres
	node := p.nodeID()
	if p.abandon.Load() || node == "" {
		return
	}
	var ws []presWrite
	for s := range w.doomed {
		ws = append(ws, presWrite{slot: s})
	}
	for room, r := range w.rooms {
		for no, pg := range r.pages {
			if pg != nil && pg.stored {
				ws = append(ws, presWrite{slot: presSlot{room, no}})
			}
		}
	}
	if !w.registered && len(ws) == 0 {
		return
	}
	if !b.nc.IsConnected() {
		b.log.Warn("presence not removed at close, disconnected: this node's members stay listed until their TTL runs out",
			"bucket", p.name, "ttl", b.presenceTTL())
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), p.deadline)
	defer cancel()
	kv, _, err := b.presBucket(ctx, false)
	if err == nil && w.registered {
		_, err = b.presBeat(ctx, kv, node, false)
	}
	if err == nil {
		err = b.presSend(ctx, w, node, ws)
	}
	if err != nil && !errors.Is(err, errNoBucket) {
		b.log.Warn("presence not removed at close: this node's members stay listed until their TTL runs out",
			"bucket", p.name, "ttl", b.presenceTTL(), "err", err)
	}
}

// --- values ---
//
// A page: format byte, incarnation, count and the numbers of the other
// pages (both 0 / none except in a head), then the members as conn, info.
// "nodes": format byte, then node, incarnation, expiry (unix ms) per node.
// Strings are a uvarint length and the bytes.

type presNode struct {
	node, inc string
	exp       time.Time
}

type presEntry struct {
	conn string
	info []byte
}

type pageVal struct {
	inc     string
	count   int
	pages   []int
	members []presEntry
}

func appendStr[T string | []byte](b []byte, s T) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodePage encodes pg; r is the room for a head, nil otherwise.
func encodePage(inc string, pg *presPage, r *presRoom) []byte {
	out := make([]byte, 0, pg.size+len(inc)+16)
	out = append(out, presFormat)
	out = appendStr(out, inc)
	if r != nil {
		out = binary.AppendUvarint(out, uint64(r.count))
		n := 0
		for _, p := range r.pages[1:] {
			if p != nil {
				n++
			}
		}
		out = binary.AppendUvarint(out, uint64(n))
		for no, p := range r.pages {
			if no > 0 && p != nil {
				out = binary.AppendUvarint(out, uint64(no))
			}
		}
	} else {
		out = append(out, 0, 0)
	}
	out = binary.AppendUvarint(out, uint64(len(pg.conns)))
	for conn, info := range pg.conns {
		out = appendStr(out, conn)
		out = appendStr(out, info)
	}
	return out
}

func encodeNodes(nodes []presNode) []byte {
	out := []byte{presFormat}
	out = binary.AppendUvarint(out, uint64(len(nodes)))
	for _, n := range nodes {
		out = appendStr(out, n.node)
		out = appendStr(out, n.inc)
		out = binary.AppendVarint(out, n.exp.UnixMilli())
	}
	return out
}

// valReader decodes a value; the first error sticks.
type valReader struct {
	b   []byte
	err error
}

func (r *valReader) uvarint(limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.err = errors.New("bad number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *valReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errors.New("bad number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a length-prefixed run, nil when empty.
func (r *valReader) bytes() []byte {
	n := r.uvarint(uint64(len(r.b)))
	if r.err != nil || n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *valReader) start() {
	if len(r.b) == 0 || r.b[0] != presFormat {
		r.err = errors.New("not a moonwire presence value (or a newer format)")
		return
	}
	r.b = r.b[1:]
}

func (r *valReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes")
	}
	return r.err
}

func decodePage(v []byte, head bool) (pageVal, error) {
	r := valReader{b: v}
	r.start()
	var pg pageVal
	pg.inc = string(r.bytes())
	pg.count = int(r.uvarint(1 << 40))
	n := r.uvarint(presMaxPages)
	if n > 0 && !head {
		r.err = errors.New("a page that names pages")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		no := r.uvarint(presMaxPages)
		if no == 0 {
			r.err = errors.New("page 0 named")
		}
		pg.pages = append(pg.pages, int(no))
	}
	m := r.uvarint(uint64(len(r.b)))
	if r.err == nil {
		pg.members = make([]presEntry, 0, m)
	}
	for i := uint64(0); i < m && r.err == nil; i++ {
		conn := string(r.bytes())
		pg.members = append(pg.members, presEntry{conn: conn, info: r.bytes()})
	}
	if err := r.done(); err != nil {
		return pageVal{}, err
	}
	if !head && pg.count != 0 || head && pg.count < len(pg.members) {
		return pageVal{}, errors.New("bad count")
	}
	return pg, nil
}

func decodeNodes(v []byte) ([]presNode, error) {
	r := valReader{b: v}
	r.start()
	n := r.uvarint(uint64(len(v)))
	out := make([]presNode, 0, min(n, 1024))
	for i := uint64(0); i < n && r.err == nil; i++ {
		node := string(r.bytes())
		inc := string(r.bytes())
		out = append(out, presNode{node: node, inc: inc, exp: time.UnixMilli(r.varint())})
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return out, nil
}

var _ broker.Presence = (*Broker)(nil)
