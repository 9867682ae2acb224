package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults for zero Options. A store is a shared resource that any script can
// fill, so it is bounded unless the operator says otherwise.
const (
	DefaultMaxBytes      = 64 << 20
	DefaultMaxKeys       = 100_000
	DefaultMaxValueBytes = 1 << 20
	DefaultSweepInterval = time.Minute
)

// Errors a write can report. Their texts are what scripts see.
var (
	ErrTooManyKeys   = errors.New("store: too many keys")
	ErrValueTooLarge = errors.New("store: value too large")
	ErrFull          = errors.New("store: full")
	// ErrNotNumber is wrapped with the key and the type found; incr raises it
	// in Lua because counting a string is a bug in the script.
	ErrNotNumber = errors.New("store: value is not a number")
	// ErrNotList is wrapped with the key and the type found when Push
	// meets a value that is not a list.
	ErrNotList = errors.New("store: value is not a list")
)

// MaxPushLength bounds Push's max: every push copies the list (values are
// never modified in place), so a longer list would make each push cost
// more than a message's worth of work.
const MaxPushLength = 10_000

// Options configure a Store, and the limits of a Module over any Backend.
// Zero fields take the defaults.
type Options struct {
	// MaxBytes bounds what the whole store holds, in approximate heap
	// bytes (see costOf): a write that would pass it fails with ErrFull
	// (expired keys are swept first). Without it, any script could fill the
	// process's memory with values it never reads again. Memory backend
	// only: a network backend is bounded by its server (Redis's maxmemory,
	// a bucket's max bytes), which is not this process's memory.
	MaxBytes int64
	// MaxKeys bounds the number of keys; a write that would add one more
	// fails with ErrTooManyKeys (expired keys are swept first). Memory
	// backend only, as MaxBytes.
	MaxKeys int
	// MaxValueBytes bounds one entry: len(key) plus the value's size, where
	// a string counts its bytes, a number 8, a boolean or null 1, and a
	// table 2 plus, per element, 1 plus its key's bytes plus its value's size
	// (roughly its JSON length). Every backend applies it (see Size).
	MaxValueBytes int
	// Now is the clock for expiry; nil means time.Now. Tests inject one.
	// Memory backend only.
	Now func() time.Time
	// SweepInterval is how often the janitor removes expired keys that
	// nobody reads; negative disables it (expiry then happens only on
	// access and when MaxKeys is reached). Memory backend only.
	SweepInterval time.Duration
}

// Store is the state behind the store module. It is safe for concurrent use
// by any number of goroutines and LStates. Values held are plain Go data as
// produced by luavalue.FromLua (nil, bool, float64, string, []any,
// map[string]any) and are never modified in place.
//
// Lock order: mu is a leaf; nothing is called while it is held (no Lua, no
// clock, no conversion).
type Store struct {
	now        func() time.Time
	sweepEvery time.Duration
	mod        *Module // the Lua module over s, for Name and Open

	mu       sync.Mutex
	maxKeys  int
	maxBytes int   // one entry, by sizeOf
	maxTotal int64 // every entry, by costOf
	total    int64 // sum of the entries' cost
	items    map[string]entry
	// nextExpiry is never later than the earliest expiry in items (it may
	// be earlier after deletes); zero means no key has a TTL. It lets the
	// MaxKeys path and the janitor skip the scan when nothing can expire.
	nextExpiry time.Time
	closed     bool
	stop, done chan struct{} // janitor; nil until the first TTL is set
}

type entry struct {
	v       any
	expires time.Time // zero: never
	cost    int64     // costOf(key, v), counted in Store.total
}

func (e entry) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

// New returns an empty store. The janitor goroutine starts with the first
// key that has a TTL, so a store that never expires anything costs none.
func New(opts Options) *Store {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	s := &Store{
		now:        opts.Now,
		sweepEvery: opts.SweepInterval,
		items:      make(map[string]entry),
	}
	// The module reads the limit from s, so that Store.SetLimits (which
	// the server calls at a reload) moves the conversion bound too.
	s.mod = &Module{b: s.Backend(), limit: s.maxValueBytes}
	s.SetLimits(opts)
	return s
}

// SetLimits changes MaxBytes, MaxKeys and MaxValueBytes (zero fields take
// the defaults; MaxValueBytes is lowered to fit MaxBytes). What the store
// already holds stays; writes are judged by the new limits.
func (s *Store) SetLimits(opts Options) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	opts.MaxValueBytes = ValueLimit(opts)
	s.mu.Lock()
	s.maxTotal, s.maxKeys, s.maxBytes = opts.MaxBytes, opts.MaxKeys, opts.MaxValueBytes
	s.mu.Unlock()
}

// maxValueBytes is MaxValueBytes as last set.
func (s *Store) maxValueBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxBytes
}

// Bytes returns what the store holds, in the approximate heap bytes
// MaxBytes bounds.
func (s *Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Get returns the live value under key. The value is shared with the store
// and must not be modified.
func (s *Store) Get(key string) (any, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.liveLocked(key, now)
	return e.v, ok
}

// Set stores v under key, expiring after ttl when ttl > 0; a nil v deletes
// the key. v must be plain data as described on Store and is not copied: the
// caller must not modify it afterwards.
func (s *Store) Set(key string, v any, ttl time.Duration) error {
	if v == nil {
		s.Delete(key)
		return nil
	}
	size := len(key) + sizeOf(v)
	now := s.now()
	e := entry{v: v, cost: costOf(key, v)}
	if ttl > 0 {
		e.expires = now.Add(ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if size > s.maxBytes {
		return ErrValueTooLarge
	}
	old, ok := s.liveLocked(key, now)
	if !ok && !s.roomLocked(now) {
		return ErrTooManyKeys
	}
	if !s.fitsLocked(e.cost-old.cost, now) {
		return ErrFull
	}
	s.putLocked(key, e)
	if !e.expires.IsZero() {
		if s.nextExpiry.IsZero() || e.expires.Before(s.nextExpiry) {
			s.nextExpiry = e.expires
		}
		s.startJanitorLocked()
	}
	return nil
}

// Incr adds n to the number under key and returns the result; a missing key
// counts from 0. With ttl > 0 the key expires ttl from now; otherwise a new
// key gets no TTL and an existing one keeps its own. A value that is not a
// number fails with an error wrapping ErrNotNumber.
func (s *Store) Incr(key string, n float64, ttl time.Duration) (float64, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(key)+sizeOf(n) > s.maxBytes {
		return 0, ErrValueTooLarge
	}
	e, ok := s.liveLocked(key, now)
	if !ok {
		if !s.roomLocked(now) {
			return 0, ErrTooManyKeys
		}
		e = entry{v: 0.0, cost: costOf(key, 0.0)}
		if !s.fitsLocked(e.cost, now) {
			return 0, ErrFull
		}
	}
	cur, isNum := e.v.(float64)
	if !isNum {
		return 0, NotNumberError(key, e.v)
	}
	e.v = cur + n
	if ttl > 0 {
		e.expires = now.Add(ttl)
		if s.nextExpiry.IsZero() || e.expires.Before(s.nextExpiry) {
			s.nextExpiry = e.expires
		}
		s.startJanitorLocked()
	}
	s.putLocked(key, e)
	return cur + n, nil
}

// Push appends v to the list under key and keeps its last limit elements,
// in one step: no other write to key comes between (a capped list, such
// as the last messages of a room). A missing key starts an empty list.
// With ttl > 0 the key expires ttl from now; otherwise a new key gets no
// TTL and an existing one keeps its own. It returns the list's length.
// limit is clamped to [1, MaxPushLength]; a value that is not a list fails
// with an error wrapping ErrNotList. v is not copied, as with Set.
func (s *Store) Push(key string, v any, limit int, ttl time.Duration) (int, error) {
	limit = min(MaxPushLength, max(1, limit))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.liveLocked(key, now)
	var cur []any
	if ok {
		list, isList := e.v.([]any)
		if !isList {
			return 0, NotListError(key, e.v)
		}
		cur = list
	} else if !s.roomLocked(now) {
		return 0, ErrTooManyKeys
	}
	keep := cur[max(0, len(cur)+1-limit):]
	list := make([]any, 0, len(keep)+1)
	list = append(append(list, keep...), v)
	if len(key)+sizeOf(list) > s.maxBytes {
		return 0, ErrValueTooLarge
	}
	ne := entry{v: list, expires: e.expires, cost: costOf(key, list)}
	if !s.fitsLocked(ne.cost-e.cost, now) {
		return 0, ErrFull
	}
	s.setExpiryLocked(&ne, now, ttl)
	s.putLocked(key, ne)
	return len(list), nil
}

// CompareAndSet stores v under key only if the key's live value is old
// (nil: the key is absent), and reports whether it did; a nil v deletes
// the key. old must be nil, a bool, a float64 or a string: values are
// compared with ==. ttl is as for Set. Limits apply as for Set, and a
// value that does not fit is an error even if the comparison failed.
func (s *Store) CompareAndSet(key string, old, v any, ttl time.Duration) (bool, error) {
	if err := CheckComparable(old); err != nil {
		return false, err
	}
	now := s.now()
	ne := entry{v: v, cost: costOf(key, v)}
	size := len(key) + sizeOf(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v != nil && size > s.maxBytes {
		return false, ErrValueTooLarge
	}
	e, ok := s.liveLocked(key, now)
	if ok != (old != nil) || (ok && !scalarEqual(e.v, old)) {
		return false, nil
	}
	if v == nil {
		s.removeLocked(key)
		return true, nil
	}
	if !ok && !s.roomLocked(now) {
		return false, ErrTooManyKeys
	}
	if !s.fitsLocked(ne.cost-e.cost, now) {
		return false, ErrFull
	}
	s.setExpiryLocked(&ne, now, ttl) // as Set: without a ttl, no expiry
	s.putLocked(key, ne)
	return true, nil
}

// scalarEqual compares a stored value with a scalar; tables never equal.
func scalarEqual(stored, old any) bool {
	switch stored.(type) {
	case []any, map[string]any:
		return false
	}
	return stored == old
}

// setExpiryLocked gives e the expiry ttl asks for (none when ttl <= 0:
// e keeps its own) and arms the janitor. s.mu must be held.
func (s *Store) setExpiryLocked(e *entry, now time.Time, ttl time.Duration) {
	if ttl > 0 {
		e.expires = now.Add(ttl)
	}
	if !e.expires.IsZero() {
		if s.nextExpiry.IsZero() || e.expires.Before(s.nextExpiry) {
			s.nextExpiry = e.expires
		}
		s.startJanitorLocked()
	}
}

// Delete removes key and reports whether it held a live value.
func (s *Store) Delete(key string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.liveLocked(key, now)
	s.removeLocked(key)
	return ok
}

// Keys returns the live keys that start with prefix, sorted. It scans every
// key, so it is for occasional listings, not per-message work.
func (s *Store) Keys(prefix string) []string {
	now := s.now()
	s.mu.Lock()
	var keys []string
	for k, e := range s.items {
		if e.expired(now) {
			s.removeLocked(k)
			continue
		}
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	slices.Sort(keys)
	return keys
}

// Len returns the number of live keys. It scans every key.
func (s *Store) Len() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.items {
		if !e.expired(now) {
			n++
		}
	}
	return n
}

// Sweep removes expired keys now and returns how many it removed. The
// janitor calls it periodically; tests with an injected clock call it
// directly.
func (s *Store) Sweep() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

// Close stops the janitor and waits for it to exit. It is idempotent and
// safe to call concurrently; every call returns only once the janitor is
// gone. The data stays usable (expiry continues lazily), because scripts may
// still run on_close while the server drains.
func (s *Store) Close() error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	if first {
		close(stop)
	}
	<-done
	return nil
}

// liveLocked returns key's entry if it has not expired, deleting it if it has.
// s.mu must be held.
func (s *Store) liveLocked(key string, now time.Time) (entry, bool) {
	e, ok := s.items[key]
	if ok && e.expired(now) {
		s.removeLocked(key)
		return entry{}, false
	}
	return e, ok
}

// putLocked stores e under key, keeping total. s.mu must be held.
func (s *Store) putLocked(key string, e entry) {
	s.total += e.cost - s.items[key].cost
	s.items[key] = e
}

// removeLocked deletes key, keeping total. s.mu must be held.
func (s *Store) removeLocked(key string) {
	s.total -= s.items[key].cost
	delete(s.items, key)
}

// fitsLocked reports whether growing the store by grow bytes keeps it
// within MaxBytes, sweeping first if something may have expired. s.mu must
// be held.
func (s *Store) fitsLocked(grow int64, now time.Time) bool {
	if grow <= 0 || s.total+grow <= s.maxTotal {
		return true
	}
	s.sweepLocked(now)
	return s.total+grow <= s.maxTotal
}

// roomLocked reports whether one more key fits, sweeping first if something
// may have expired. s.mu must be held.
func (s *Store) roomLocked(now time.Time) bool {
	if len(s.items) < s.maxKeys {
		return true
	}
	s.sweepLocked(now)
	return len(s.items) < s.maxKeys
}

// sweepLocked removes expired keys and recomputes nextExpiry. s.mu must be
// held.
func (s *Store) sweepLocked(now time.Time) int {
	if s.nextExpiry.IsZero() || now.Before(s.nextExpiry) {
		return 0
	}
	n := 0
	var next time.Time
	for k, e := range s.items {
		switch {
		case e.expires.IsZero():
		case e.expired(now):
			s.removeLocked(k)
			n++
		case next.IsZero() || e.expires.Before(next):
			next = e.expires
		}
	}
	s.nextExpiry = next
	return n
}

// startJanitorLocked starts the sweeping goroutine once, unless the store is
// closed or sweeping is disabled; the Store owns it and Close waits for it.
// s.mu must be held.
func (s *Store) startJanitorLocked() {
	if s.closed || s.stop != nil || s.sweepEvery < 0 {
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.janitor(s.stop, s.done)
}

func (s *Store) janitor(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// costOf is the MaxBytes measure of an entry: roughly what it takes on the
// heap, so the budget bounds memory rather than the JSON length sizeOf
// measures (a table of a thousand small numbers is a few KiB of JSON and
// several times that in Go maps and interfaces).
func costOf(key string, v any) int64 {
	const entryOverhead = 64 // the map slot, the key's header, the entry
	return entryOverhead + int64(len(key)) + heapSize(v)
}

// heapSize estimates the heap bytes of a value as FromLua builds it.
func heapSize(v any) int64 {
	const iface, strHdr, mapEntry = 16, 16, 48
	switch x := v.(type) {
	case string:
		return strHdr + int64(len(x))
	case []any:
		n := int64(24 + iface*cap(x))
		for _, e := range x {
			n += heapSize(e)
		}
		return n
	case map[string]any:
		n := int64(48)
		for k, e := range x {
			n += mapEntry + int64(len(k)) + heapSize(e)
		}
		return n
	}
	return 8 // numbers, booleans, null: a word behind the interface
}

// sizeOf is the MaxValueBytes measure; see Options.MaxValueBytes. It must
// stay the measure of luavalue.Options.MaxSize, which store.set uses to stop
// converting a value early that Set would refuse.
func sizeOf(v any) int {
	switch x := v.(type) {
	case nil, bool:
		return 1
	case float64:
		return 8
	case string:
		return len(x)
	case []any:
		n := 2
		for _, e := range x {
			n += 1 + sizeOf(e)
		}
		return n
	case map[string]any:
		n := 2
		for k, e := range x {
			n += 1 + len(k) + sizeOf(e)
		}
		return n
	}
	return 16 // other Go values from Set: a nominal word or two
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any, map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// ttlDuration converts seconds to a Duration without overflow, keeping any
// positive TTL positive.
func ttlDuration(seconds float64) time.Duration {
	if seconds <= 0 {
		return 0
	}
	if seconds >= float64(math.MaxInt64)/float64(time.Second) {
		return math.MaxInt64
	}
	return max(time.Duration(seconds*float64(time.Second)), 1)
}
