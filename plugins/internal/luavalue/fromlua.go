package luavalue

import (
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
)

// FromLua converts a Lua value into plain Go data with DefaultMaxDepth; see
// FromLuaDepth.
func FromLua(v lua.LValue) (any, error) {
	return FromLuaDepth(v, DefaultMaxDepth)
}

// FromLuaDepth converts a Lua value into plain Go data: nil, bool, float64,
// string, []any and map[string]any, and nothing else, so the result can be
// stored, compared and shared between goroutines without touching the LState
// again. nil and Null both become nil; a nil inside an array comes from Null.
// Lua numbers stay float64 (NaN and ±Inf included); only JSON rejects them.
//
// Tables nested deeper than maxDepth fail with ErrTooDeep, a table reached
// again while it is still being converted fails with ErrCycle (a table shared
// by two branches is fine and is converted twice), and errors name the path
// from the root, like `unsupported value type: function at $.handlers[2]`.
func FromLuaDepth(v lua.LValue, maxDepth int) (any, error) {
	w := getWalker(maxDepth)
	defer putWalker(w)
	return w.fromLua(v)
}

// walker carries the state of one traversal: the tables on the path from
// the root (for depth and cycle checks) and a reusable key buffer.
type walker struct {
	maxDepth int
	limit    int // AppendJSON's bound on len(dst)
	path     []*lua.LTable
	keys     []string
}

// walkers are pooled because their buffers are the only allocations left
// when encoding a small table.
var walkers = sync.Pool{New: func() any { return new(walker) }}

func getWalker(maxDepth int) *walker {
	w := walkers.Get().(*walker)
	w.maxDepth = maxDepth
	return w
}

func putWalker(w *walker) {
	// Drop references so a pooled walker does not keep a dead LState's
	// tables alive, and drop oversized buffers rather than pin them.
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

func (w *walker) fromLua(v lua.LValue) (any, error) {
	switch x := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(x), nil
	case lua.LNumber:
		return float64(x), nil
	case lua.LString:
		return string(x), nil
	case *lua.LTable:
		return w.table(x)
	}
	if IsNull(v) {
		return nil, nil
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
	if errors.Is(err, ErrTooDeep) {
		return err // the path would be maxDepth segments of noise
	}
	var pe *pathError
	if errors.As(err, &pe) {
		pe.segs = append(pe.segs, seg)
		return pe
	}
	return &pathError{err: err, segs: []string{seg}}
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
