package luavalue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	lua "github.com/yuin/gopher-lua"
)

// DefaultMaxDepth bounds table nesting in FromLua. Scripts have no business
// nesting deeper, and the bound keeps Go recursion shallow.
const DefaultMaxDepth = 64

// Errors that conversion failures wrap, so that callers can tell a script's
// mistake apart with errors.Is whatever path the message names.
var (
	// ErrTooDeep: tables nested deeper than the limit.
	ErrTooDeep = errors.New("table nesting too deep")
	// ErrCycle: a table that contains itself, which no tree can represent.
	ErrCycle = errors.New("table contains a cycle")
	// ErrType: a function, userdata, thread or channel, which have no data form.
	ErrType = errors.New("unsupported value type")
	// ErrKey: an object key that is not a string, or an array with holes or
	// foreign keys.
	ErrKey = errors.New("unsupported table key")
	// ErrNumber: NaN or an infinity where JSON has no way to write it.
	ErrNumber = errors.New("unsupported number")
	// ErrTooLarge: a result past Options.MaxSize.
	ErrTooLarge = errors.New("encoding too large")
	// ErrTooMany: more values visited than Options.MaxNodes.
	ErrTooMany = errors.New("too many values")
)

// DefaultMaxNodes bounds the values one walk visits when the caller sets no
// other bound. A table reached by two paths is walked twice, so 22 levels of
// t = {t, t} are 23 tables but 2^22 paths: without a bound on the walk, a
// few lines of script cost seconds and hundreds of megabytes.
const DefaultMaxNodes = 1 << 20

// pollEvery is how many values a walk visits between looks at
// Options.Context: often enough that a handler timeout ends a long walk
// within about a millisecond, rarely enough to cost nothing.
const pollEvery = 1 << 12

// Options bound one walk (FromLuaWith, AppendJSONWith). Zero fields take the
// defaults.
type Options struct {
	// MaxDepth bounds table nesting; <= 0 means DefaultMaxDepth.
	MaxDepth int
	// MaxSize, when > 0, bounds the result, checked as it grows so that
	// the walk stops (ErrTooLarge) soon after passing it rather than after
	// building all of it. For AppendJSONWith it is the bytes appended; for
	// FromLuaWith it is the size a store bounds: a string counts its bytes,
	// a number 8, a boolean or null 1, and a table 2 plus, per element, 1
	// plus its key's bytes plus its value's size (roughly the JSON length).
	MaxSize int
	// MaxNodes bounds the values visited, shared sub-tables counted once
	// per path (ErrTooMany). 0 means DefaultMaxNodes when MaxSize is 0, and
	// no separate bound otherwise: every value but the root costs at least
	// 1 of MaxSize, which bounds the count already.
	MaxNodes int
	// Context, when non-nil, is polled every few thousand values; once it
	// is done the walk stops with its error (context.Canceled or
	// context.DeadlineExceeded), so that a handler timeout ends a walk the
	// Lua VM, which polls only between instructions, cannot interrupt.
	// Modules pass L.Context().
	Context context.Context
}

// FromLua converts a Lua value into plain Go data with the default Options;
// see FromLuaWith.
func FromLua(v lua.LValue) (any, error) {
	return FromLuaWith(v, Options{})
}

// FromLuaDepth is FromLuaWith with only MaxDepth set.
func FromLuaDepth(v lua.LValue, maxDepth int) (any, error) {
	return FromLuaWith(v, Options{MaxDepth: maxDepth})
}

// FromLuaWith converts a Lua value into plain Go data: nil, bool, float64,
// string, []any and map[string]any, and nothing else, so the result can be
// stored, compared and shared between goroutines without touching the LState
// again. nil and Null both become nil; a nil inside an array comes from Null.
// Lua numbers stay float64 (NaN and ±Inf included); only JSON rejects them.
//
// Tables nested deeper than o.MaxDepth fail with ErrTooDeep, a table reached
// again while it is still being converted fails with ErrCycle (a table shared
// by two branches is fine and is converted twice, hence the bounds on size
// and values visited in o), and errors name the path from the root, like
// `unsupported value type: function at $.handlers[2]`. Failures of a bound
// (ErrTooDeep, ErrTooLarge, ErrTooMany, the context's error) name no path:
// where the walk happened to pass the bound says nothing.
func FromLuaWith(v lua.LValue, o Options) (any, error) {
	w := getWalker(o)
	defer putWalker(w)
	if o.MaxSize > 0 {
		w.limit = o.MaxSize
	}
	return w.fromLua(v)
}

// walker carries the state of one traversal: its bounds and what it has
// spent of them, the tables on the path from the root (for depth and cycle
// checks) and a reusable key buffer.
type walker struct {
	maxDepth int
	limit    int // AppendJSON's bound on len(dst); FromLua's on size
	size     int // FromLua's running Options.MaxSize measure
	maxNodes int
	nodes    int
	ctx      context.Context
	path     []*lua.LTable
	keys     []string
}

// walkers are pooled because their buffers are the only allocations left
// when encoding a small table.
var walkers = sync.Pool{New: func() any { return new(walker) }}

func getWalker(o Options) *walker {
	w := walkers.Get().(*walker)
	w.maxDepth = o.MaxDepth
	if w.maxDepth <= 0 {
		w.maxDepth = DefaultMaxDepth
	}
	w.maxNodes = o.MaxNodes
	if w.maxNodes <= 0 {
		w.maxNodes = math.MaxInt
		if o.MaxSize <= 0 {
			w.maxNodes = DefaultMaxNodes
		}
	}
	w.limit, w.size, w.nodes, w.ctx = math.MaxInt, 0, 0, o.Context
	return w
}

func putWalker(w *walker) {
	// Drop references so a pooled walker does not keep a dead LState's
	// tables (or a finished request's context) alive, and drop oversized
	// buffers rather than pin them.
	w.ctx = nil
	clear(w.path[:cap(w.path)])
	clear(w.keys[:cap(w.keys)])
	if cap(w.path) > 256 || cap(w.keys) > 4096 {
		return
	}
	w.path, w.keys = w.path[:0], w.keys[:0]
	walkers.Put(w)
}

func (w *walker) enter(t *lua.LTable) error {
	if len(w.path) >= w.maxDepth {
		return ErrTooDeep
	}
	// A linear scan beats a map here: the path is at most maxDepth long and
	// usually two or three tables.
	if slices.Contains(w.path, t) {
		return ErrCycle
	}
	w.path = append(w.path, t)
	return nil
}

func (w *walker) leave() { w.path = w.path[:len(w.path)-1] }

// visit counts one value against MaxNodes and polls the context every
// pollEvery values.
func (w *walker) visit() error {
	w.nodes++
	if w.nodes > w.maxNodes {
		return ErrTooMany
	}
	if w.nodes%pollEvery == 0 && w.ctx != nil {
		return w.ctx.Err()
	}
	return nil
}

// grow adds n to FromLua's size and checks it against the limit.
func (w *walker) grow(n int) error {
	if w.size += n; w.size > w.limit {
		return ErrTooLarge
	}
	return nil
}

func (w *walker) fromLua(v lua.LValue) (any, error) {
	if err := w.visit(); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case *lua.LNilType:
		return nil, w.grow(1)
	case lua.LBool:
		return bool(x), w.grow(1)
	case lua.LNumber:
		return float64(x), w.grow(8)
	case lua.LString:
		return string(x), w.grow(len(x))
	case *lua.LTable:
		return w.table(x)
	}
	if IsNull(v) {
		return nil, w.grow(1)
	}
	return nil, fmt.Errorf("%w: %s", ErrType, v.Type())
}

func (w *walker) table(t *lua.LTable) (any, error) {
	if err := w.enter(t); err != nil {
		return nil, err
	}
	defer w.leave()
	start := len(w.keys)
	defer func() { w.keys = w.keys[:start] }()
	n, isArray, err := w.shape(t)
	if err != nil {
		return nil, err
	}
	// Charged before the make below, so that a table too large for the
	// limit fails without allocating its result.
	if err := w.grow(2 + n); err != nil {
		return nil, err
	}
	if isArray {
		out := make([]any, n)
		for i := range n {
			e, err := w.fromLua(t.RawGetInt(i + 1))
			if err != nil {
				return nil, atIndex(err, i+1)
			}
			out[i] = e
		}
		return out, nil
	}
	out := make(map[string]any, n)
	for i := range n {
		k := w.keys[start+i]
		if err := w.grow(len(k)); err != nil {
			return nil, err
		}
		e, err := w.fromLua(t.RawGetString(k))
		if err != nil {
			return nil, atKey(err, k)
		}
		out[k] = e
	}
	return out, nil
}

// shape decides whether t is an array of n elements or an object of n string
// keys; object keys are appended to w.keys, sorted, so that JSON output is
// deterministic. Keys stay in the shared buffer (not a slice per table) to
// keep encoding allocation-free in the common case; callers truncate it back.
func (w *walker) shape(t *lua.LTable) (n int, isArray bool, err error) {
	start := len(w.keys)
	count, maxIndex := 0, 0.0
	allIndex := true
	var badKey lua.LValue
	// Count the array part without Next, which boxes every index it
	// returns; Next then only visits the hash part. With a hole the fast
	// count would be wrong, so walk everything (such a table is an error
	// anyway, and the slow walk finds the key to name).
	k := lua.LNil
	if n := t.Len(); n > 0 && !hasHole(t, n) {
		count, maxIndex = n, float64(n)
		k = lua.LNumber(n)
	}
	// Next rather than ForEach: a closure capturing these counters would
	// move them to the heap on every table.
	for k, _ = t.Next(k); k != lua.LNil; k, _ = t.Next(k) {
		count++
		switch kk := k.(type) {
		case lua.LString:
			allIndex = false
			w.keys = append(w.keys, string(kk))
		case lua.LNumber:
			f := float64(kk)
			if f >= 1 && f == math.Trunc(f) {
				maxIndex = max(maxIndex, f)
				continue
			}
			allIndex = false
			if badKey == nil {
				badKey = k
			}
		default:
			allIndex = false
			if badKey == nil {
				badKey = k
			}
		}
	}
	// count distinct positive integers, all <= count: exactly 1..count.
	sequence := allIndex && maxIndex <= float64(count)
	if IsArray(t) {
		if !sequence {
			w.keys = w.keys[:start]
			return 0, false, arrayKeyError(t, count, maxIndex, allIndex, badKey)
		}
		return count, true, nil
	}
	if count > 0 && sequence {
		return count, true, nil
	}
	if nstr := len(w.keys) - start; count != nstr {
		w.keys = w.keys[:start]
		switch {
		case badKey != nil:
			return 0, false, fmt.Errorf("%w: %s %s (object keys must be strings)", ErrKey, badKey.Type(), keyRepr(badKey))
		case nstr == 0: // only positive integers, but not 1..count
			return 0, false, arrayKeyError(t, count, maxIndex, true, nil)
		}
		return 0, false, fmt.Errorf("%w: table mixes array indices and string keys", ErrKey)
	}
	slices.Sort(w.keys[start:])
	return count, false, nil
}

func hasHole(t *lua.LTable, n int) bool {
	for i := 1; i < n; i++ {
		if t.RawGetInt(i) == lua.LNil {
			return true
		}
	}
	return false
}

func arrayKeyError(t *lua.LTable, count int, maxIndex float64, allIndex bool, badKey lua.LValue) error {
	if allIndex {
		return fmt.Errorf("%w: array has holes (index %s with %d elements)", ErrKey, strconv.FormatFloat(maxIndex, 'f', -1, 64), count)
	}
	if badKey == nil {
		// The foreign key is a string; find one to name.
		t.ForEach(func(k, _ lua.LValue) {
			if _, ok := k.(lua.LString); ok && badKey == nil {
				badKey = k
			}
		})
	}
	return fmt.Errorf("%w: array has key %s", ErrKey, keyRepr(badKey))
}

func keyRepr(k lua.LValue) string {
	switch kk := k.(type) {
	case lua.LString:
		return strconv.Quote(string(kk))
	case lua.LNumber:
		return strconv.FormatFloat(float64(kk), 'g', -1, 64)
	}
	return k.Type().String()
}

// pathError carries the location of a failure. Segments are collected on the
// way back up, innermost first, so the happy path builds no strings at all.
type pathError struct {
	err  error
	segs []string // reversed
}

func (e *pathError) Error() string {
	var b strings.Builder
	b.WriteString(e.err.Error())
	b.WriteString(" at $")
	for i := len(e.segs) - 1; i >= 0; i-- {
		b.WriteString(e.segs[i])
	}
	return b.String()
}

func (e *pathError) Unwrap() error { return e.err }

func addSeg(err error, seg string) error {
	if isBound(err) {
		return err // the path would be noise, up to maxDepth segments of it
	}
	var pe *pathError
	if errors.As(err, &pe) {
		pe.segs = append(pe.segs, seg)
		return pe
	}
	return &pathError{err: err, segs: []string{seg}}
}

// isBound reports whether err is a walk's bound giving out rather than
// something wrong at one place in the value.
func isBound(err error) bool {
	return errors.Is(err, ErrTooDeep) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrTooMany) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func atIndex(err error, i int) error { return addSeg(err, "["+strconv.Itoa(i)+"]") }

func atKey(err error, k string) error {
	if isIdent(k) {
		return addSeg(err, "."+k)
	}
	return addSeg(err, "["+strconv.Quote(k)+"]")
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
