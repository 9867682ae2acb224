package store

import (
	"fmt"
	"time"
)

// Backend is where a Module keeps its data: the memory *Store (through
// Store.Backend), or a network backend (plugins/store/redis,
// plugins/store/nats) that several moonwire nodes share.
//
// Every method has the meaning the memory backend's method of the same
// name documents on Store (Set, Incr, Push, CompareAndSet, ...), on every
// backend: the shared conformance suite runs one table of Lua cases
// against each. In particular:
//
//   - Values are plain Go data as luavalue.FromLua makes it (nil, bool,
//     float64, string, []any, map[string]any) and come back from Get as
//     exactly that data: the string "1" stays a string, an empty array
//     stays an array, bytes that are not UTF-8 stay as they were. Get may
//     return a value shared with the backend; callers must not modify it.
//   - Incr, Push and CompareAndSet are atomic with respect to every other
//     write to the key, from any node sharing the backend; a TTL given to
//     them or to Set is applied in the same step.
//   - A TTL <= 0 means none: Set and CompareAndSet then store a key that
//     never expires; Incr and Push keep the key's own expiry.
//   - MaxValueBytes (learnt through SetLimits) is the backend's to
//     enforce, because only it sees a pushed list whole. It fails with
//     ErrValueTooLarge. MaxKeys and MaxBytes bound the memory backend
//     only: a server's own limits govern a network backend.
//   - Incr on a non-number fails with an error wrapping ErrNotNumber, and
//     Push on a non-list with one wrapping ErrNotList (NotNumberError,
//     NotListError), because scripts raise on those two.
//
// Errors a network can cause (the server is down, slow or refuses) are
// returned, never panicked, and a backend bounds every call by its own
// timeout: the methods take no context because a store call is made from
// a Lua builtin, which has only the VM's. Their text should start with
// "store: "; the Module adds it when missing.
type Backend interface {
	// Get returns the live value under key and whether there is one.
	Get(key string) (v any, ok bool, err error)
	// Set stores v under key, expiring after ttl when ttl > 0; a nil v
	// deletes the key.
	Set(key string, v any, ttl time.Duration) error
	// Incr adds n to the number under key (a missing key counts from 0)
	// and returns the result.
	Incr(key string, n float64, ttl time.Duration) (float64, error)
	// Push appends v to the list under key, keeps its last limit
	// elements and returns the list's length.
	Push(key string, v any, limit int, ttl time.Duration) (int, error)
	// CompareAndSet stores v under key only if the live value is old
	// (nil: absent) and reports whether it did; a nil v deletes.
	CompareAndSet(key string, old, v any, ttl time.Duration) (bool, error)
	// Delete removes key and reports whether it held a live value.
	Delete(key string) (bool, error)
	// Keys returns the live keys that start with prefix, sorted.
	Keys(prefix string) ([]string, error)
	// SetLimits changes the limits the backend enforces (at least
	// MaxValueBytes, see ValueLimit).
	SetLimits(opts Options)
	// Close releases the backend's connections and goroutines.
	Close() error
}

// MaxListKeys bounds what Keys returns on a network backend, where the
// store has no MaxKeys: a listing is built in memory and handed to a
// script whole. Past it, Keys fails with ErrTooManyToList.
const MaxListKeys = 100_000

// ErrTooManyToList is what Keys reports on a network backend when more
// than MaxListKeys keys match.
var ErrTooManyToList = fmt.Errorf("store: more than %d keys to list", MaxListKeys)

// ValueLimit returns the MaxValueBytes that opts give, as SetLimits
// applies it: the default when zero, and never more than MaxBytes.
func ValueLimit(opts Options) int {
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	v := opts.MaxValueBytes
	if v <= 0 {
		v = DefaultMaxValueBytes
	}
	return int(min(int64(v), maxBytes))
}

// Size is the MaxValueBytes measure of v, without its key (see
// Options.MaxValueBytes). Network backends judge values by it, so that a
// value refused on one backend is refused on all.
func Size(v any) int { return sizeOf(v) }

// TypeName is what the store's errors call the type of a stored value:
// "string", "boolean", "table", and Go's name for anything else (a number
// is a "float64", as the memory backend has always said).
func TypeName(v any) string { return typeName(v) }

// NotNumberError is the error Incr returns when key holds v.
func NotNumberError(key string, v any) error {
	return fmt.Errorf("%w: %q holds a %s", ErrNotNumber, key, typeName(v))
}

// NotListError is the error Push returns when key holds v.
func NotListError(key string, v any) error {
	return fmt.Errorf("%w: %q holds a %s", ErrNotList, key, typeName(v))
}

// CheckComparable returns the error CompareAndSet reports for an old value
// it cannot compare: anything but nil, a bool, a float64 or a string.
func CheckComparable(old any) error {
	switch old.(type) {
	case nil, bool, float64, string:
		return nil
	}
	return fmt.Errorf("store: compare-and-set compares a string, number, boolean or nil, not a %s", typeName(old))
}

// Equal reports whether a stored value equals the comparable old of
// CompareAndSet: scalars by ==, with no conversion; a table equals nothing.
func Equal(stored, old any) bool { return scalarEqual(stored, old) }

// memory is the *Store as a Backend: the Store keeps its own error-free
// Go API (Get returns two values) for the callers that use it directly.
type memory struct{ s *Store }

// Backend returns s as a Backend. None of its calls fails for a reason a
// network would cause.
func (s *Store) Backend() Backend { return memory{s} }

func (m memory) Get(key string) (any, bool, error) {
	v, ok := m.s.Get(key)
	return v, ok, nil
}

func (m memory) Set(key string, v any, ttl time.Duration) error { return m.s.Set(key, v, ttl) }

func (m memory) Incr(key string, n float64, ttl time.Duration) (float64, error) {
	return m.s.Incr(key, n, ttl)
}

func (m memory) Push(key string, v any, limit int, ttl time.Duration) (int, error) {
	return m.s.Push(key, v, limit, ttl)
}

func (m memory) CompareAndSet(key string, old, v any, ttl time.Duration) (bool, error) {
	return m.s.CompareAndSet(key, old, v, ttl)
}

func (m memory) Delete(key string) (bool, error)      { return m.s.Delete(key), nil }
func (m memory) Keys(prefix string) ([]string, error) { return m.s.Keys(prefix), nil }
func (m memory) SetLimits(opts Options)               { m.s.SetLimits(opts) }
func (m memory) Close() error                         { return m.s.Close() }
