package router

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// connTable maps tokens to live connections. A token is a slot index plus a
// generation, so that a readiness report or a conn id that outlived its
// connection never reaches the connection that reused the slot. Lookups are
// lock-free: they run on every epoll report.
type connTable struct {
	chunks [tableChunks]atomic.Pointer[[chunkSize]atomic.Pointer[Conn]]

	mu   sync.Mutex
	free []uint32 // released slots
	next uint32   // first never-used slot
	gen  []uint32 // generation per slot, bumped on release; guarded by mu
	n    atomic.Int64
}

const (
	chunkSize   = 1024
	tableChunks = 4096 // 4M connections per process
)

// reserve takes a slot for a connection about to be added and returns
// its token, or false when the table is full. The slot stays empty, so
// lookups find nothing, until publish stores the connection: the
// connection is built outside the table's lock, with its token in hand.
func (t *connTable) reserve() (tok uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var slot uint32
	if n := len(t.free); n > 0 {
		slot = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if t.next >= chunkSize*tableChunks {
			return 0, false
		}
		slot = t.next
		t.next++
		t.gen = append(t.gen, 0)
	}
	if ci := slot / chunkSize; t.chunks[ci].Load() == nil {
		t.chunks[ci].Store(new([chunkSize]atomic.Pointer[Conn]))
	}
	return uint64(t.gen[slot])<<32 | uint64(slot), true
}

// publish makes c visible to lookups under the token reserve gave it,
// which c.desc holds.
func (t *connTable) publish(c *Conn) {
	slot := uint32(c.token())
	t.chunks[slot/chunkSize].Load()[slot%chunkSize].Store(c)
	t.n.Add(1)
}

// get returns the connection holding tok, or nil.
func (t *connTable) get(tok uint64) *Conn {
	slot := uint32(tok)
	if slot >= chunkSize*tableChunks {
		return nil
	}
	chunk := t.chunks[slot/chunkSize].Load()
	if chunk == nil {
		return nil
	}
	c := chunk[slot%chunkSize].Load()
	if c == nil || c.token() != tok {
		return nil
	}
	return c
}

// remove frees c's slot.
func (t *connTable) remove(c *Conn) {
	slot := uint32(c.token())
	t.mu.Lock()
	chunk := t.chunks[slot/chunkSize].Load()
	if chunk != nil && chunk[slot%chunkSize].CompareAndSwap(c, nil) {
		t.gen[slot]++
		t.free = append(t.free, slot)
		t.n.Add(-1)
	}
	t.mu.Unlock()
}

// each calls fn for every live connection, without locking: connections
// added or removed meanwhile may or may not be seen.
func (t *connTable) each(fn func(*Conn)) {
	t.mu.Lock()
	used := t.next
	t.mu.Unlock()
	for ci := uint32(0); ci*chunkSize < used; ci++ {
		chunk := t.chunks[ci].Load()
		if chunk == nil {
			continue
		}
		for i := range chunk {
			if c := chunk[i].Load(); c != nil {
				fn(c)
			}
		}
	}
}

// len returns the number of live connections.
func (t *connTable) len() int64 { return t.n.Load() }

// Conn ids are "<node>-<token in base 36>": unique across the cluster
// (node ids are) and resolvable to a slot without a map.
func formatID(node string, tok uint64) string {
	return node + "-" + strconv.FormatUint(tok, 36)
}

// parseID splits an id into node and token.
func parseID(id string) (node string, tok uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", 0, false
	}
	tok, err := strconv.ParseUint(id[i+1:], 36, 64)
	if err != nil {
		return "", 0, false
	}
	return id[:i], tok, true
}
