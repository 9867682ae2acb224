package lua

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/lua/internal/luapat"
)

// The builtins here replace gopher-lua's where one call could run or
// allocate without bound. gopher-lua checks a VM's context only between
// Lua instructions, so a Go builtin that backtracks for a minute, or
// builds gigabytes, is out of the watchdog's reach:
//
//   - the pattern functions (find, match, gmatch, gsub) run on luapat,
//     which polls the VM's context every few thousand steps, so that a
//     handler timeout stops a backtracking pattern like any Lua loop; gsub
//     builds its result in one pass (gopher-lua copies the whole string for
//     each replacement) and gmatch finds one match per call (gopher-lua
//     finds them all up front);
//   - the functions whose result size the script controls (gsub,
//     table.concat, string.format, upper and lower) pass it to vm.charge
//     before allocating it;
//   - unpack and string.byte refuse more results than the Lua stack can
//     take before pushing any, and grow the stack once;
//   - loadstring and load compile at most maxChunk bytes of source nested
//     at most maxNesting deep: gopher-lua's parser and compiler take
//     memory and time superlinear in both.

// maxChunk bounds the source loadstring and load compile.
const maxChunk = 256 << 10

// maxNesting bounds how deeply loaded source may nest brackets, blocks
// and operator chains: Lua 5.1 refuses more than 200 "syntax levels"
// (LUAI_MAXCCALLS), and so do we, before gopher-lua's parser sees it.
const maxNesting = 200

// openStrlib installs the bounded builtins in the VM's string and table
// libraries and globals.
func (v *vm) openStrlib() {
	L := v.L
	set := func(t *glua.LTable, name string, f glua.LGFunction) {
		t.RawSetString(name, L.NewFunction(f))
	}
	str := L.GetGlobal("string").(*glua.LTable)
	set(str, "find", v.strFind)
	set(str, "match", v.strMatch)
	set(str, "gsub", v.strGsub)
	gmatch := L.NewFunction(v.strGmatch)
	str.RawSetString("gmatch", gmatch)
	str.RawSetString("gfind", gmatch) // the Lua 5.0 name, which 5.1 keeps
	v.origFormat = str.RawGetString("format").(*glua.LFunction)
	set(str, "format", v.strFormat)
	set(str, "upper", v.strCase("string.upper", strings.ToUpper, unicode.ToUpper))
	set(str, "lower", v.strCase("string.lower", strings.ToLower, unicode.ToLower))
	set(str, "byte", strByte)

	set(L.GetGlobal("table").(*glua.LTable), "concat", v.tabConcat)

	g := L.G.Global
	set(g, "unpack", unpack)
	set(g, "loadstring", v.loadString)
	set(g, "load", v.load)
}

// patState is a pattern matcher bound to the Lua thread it runs for, so
// that it can poll that thread's context.
type patState struct {
	luapat.Iter
	L *glua.LState
}

func newPatState() *patState {
	p := &patState{}
	p.Check = p.check // bound once: a method value allocates
	return p
}

// check ends the match when the callback is stopped: the watchdog
// cancels the VM's context, and a coroutine's context with it.
func (p *patState) check() error {
	if ctx := p.L.Context(); ctx != nil {
		return ctx.Err()
	}
	return nil
}

// pat returns an idle matcher for L. The VM keeps those it is given back
// (release), so that the pattern functions allocate no matcher per call;
// one that an error unwinds past is simply left to the collector. A
// matcher is taken for the length of one call, so that a gsub whose
// replacement function calls gsub gets a second one.
func (v *vm) pat(L *glua.LState) *patState {
	var p *patState
	if n := len(v.pats); n > 0 {
		p, v.pats = v.pats[n-1], v.pats[:n-1]
	} else {
		p = newPatState()
	}
	p.L = L
	return p
}

func (v *vm) release(p *patState) {
	p.L = nil
	v.pats = append(v.pats, p)
}

// patError raises a pattern function's error: a malformed pattern, or
// the context's error when the callback was stopped (which vm.pcall then
// reports as the handler timeout).
func patError(L *glua.LState, what string, err error) {
	L.RaiseError("%s: %s", what, err.Error())
}

// pushCapture pushes capture i of p's last match: its text, or the
// 1-based number of a position capture.
func pushCapture(L *glua.LState, what string, p *patState, s string, i int) {
	c, err := p.Capture(i)
	if err != nil {
		patError(L, what, err)
	}
	if c.Position {
		L.Push(glua.LNumber(c.Start + 1))
	} else {
		L.Push(glua.LString(s[c.Start:c.End]))
	}
}

// startIndex is Lua 5.1's start offset (the 1-based, possibly negative,
// argument init) as a byte offset clamped to [0, len].
func startIndex(init, n int) int {
	if init < 0 {
		init += n + 1
	}
	return min(max(init-1, 0), n)
}

func (v *vm) strFind(L *glua.LState) int  { return v.find(L, "string.find", true) }
func (v *vm) strMatch(L *glua.LState) int { return v.find(L, "string.match", false) }

// find is string.find (with positions) and string.match (captures only).
func (v *vm) find(L *glua.LState, what string, positions bool) int {
	s := L.CheckString(1)
	pattern := L.CheckString(2)
	init := startIndex(L.OptInt(3, 1), len(s))
	if positions && (L.ToBool(4) || !luapat.HasSpecials(pattern)) {
		i := strings.Index(s[init:], pattern)
		if i < 0 {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(glua.LNumber(init + i + 1))
		L.Push(glua.LNumber(init + i + len(pattern)))
		return 2
	}
	p := v.pat(L)
	start, end, err := p.Find(s, pattern, init)
	if err != nil {
		patError(L, what, err)
	}
	if start < 0 {
		v.release(p)
		L.Push(glua.LNil)
		return 1
	}
	n := p.NumCaptures()
	if positions {
		L.Push(glua.LNumber(start + 1))
		L.Push(glua.LNumber(end))
	} else {
		n = max(n, 1) // no captures: the whole match
	}
	for i := range n {
		pushCapture(L, what, p, s, i)
	}
	v.release(p)
	if positions {
		return n + 2
	}
	return n
}

// strGmatch is string.gmatch: an iterator that finds one match per call.
func (v *vm) strGmatch(L *glua.LState) int {
	s := L.CheckString(1)
	pattern := L.CheckString(2)
	p := newPatState() // the iterator's own: it lives as long as the iterator
	p.Reset(s, pattern, 0, false)
	L.Push(L.NewFunction(func(L *glua.LState) int {
		p.L = L // the thread calling the iterator, whichever it is
		_, _, ok, err := p.Next()
		p.L = nil
		if err != nil {
			patError(L, "string.gmatch", err)
		}
		if !ok {
			return 0
		}
		n := max(p.NumCaptures(), 1)
		for i := range n {
			pushCapture(L, "string.gmatch", p, s, i)
		}
		return n
	}))
	return 1
}

// strGsub is string.gsub. The result is built once, left to right, and
// its growth is charged before it is allocated; a subject with nothing
// to replace is returned as it is.
func (v *vm) strGsub(L *glua.LState) int {
	const what = "string.gsub"
	s := L.CheckString(1)
	pattern := L.CheckString(2)
	repl := L.Get(3)
	var replStr string
	switch repl.(type) {
	case glua.LString, glua.LNumber:
		replStr = glua.LVAsString(repl)
	case *glua.LTable, *glua.LFunction:
	default:
		L.ArgError(3, "string/function/table expected, got "+repl.Type().String())
	}
	maxN := L.OptInt(4, len(s)+1)

	p := v.pat(L)
	p.Reset(s, pattern, 0, true)
	out := outBuf{v: v, L: L, what: what}
	n, copied, changed := 0, 0, false
	for n < maxN {
		start, end, ok, err := p.Next()
		if err != nil {
			patError(L, what, err)
		}
		if !ok {
			break
		}
		n++
		var val glua.LValue
		switch r := repl.(type) {
		case *glua.LTable:
			pushCapture(L, what, p, s, 0) // the first capture is the key
			val = L.GetTable(r, L.Get(-1))
			L.Pop(1)
		case *glua.LFunction:
			L.Push(r)
			nargs := max(p.NumCaptures(), 1)
			for i := range nargs {
				pushCapture(L, what, p, s, i)
			}
			L.Call(nargs, 1) // a Lua function: the VM's deadline applies
			val = L.Get(-1)
			L.Pop(1)
		default:
			out.WriteString(s[copied:start])
			if err := p.Expand(&out, replStr); err != nil {
				patError(L, what, err)
			}
			copied, changed = end, true
			continue
		}
		// A table or function replacement of nil or false keeps the match.
		switch val.(type) {
		case *glua.LNilType:
		case glua.LBool:
			if val == glua.LTrue {
				L.RaiseError("%s: invalid replacement value (a boolean)", what)
			}
		case glua.LString, glua.LNumber:
			out.WriteString(s[copied:start])
			out.WriteString(glua.LVAsString(val))
			copied, changed = end, true
		default:
			L.RaiseError("%s: invalid replacement value (a %s)", what, val.Type().String())
		}
	}
	v.release(p)
	if !changed {
		if orig, ok := L.Get(1).(glua.LString); ok {
			L.Push(orig) // no allocation
		} else {
			L.Push(glua.LString(s)) // a number subject: the result is still a string
		}
	} else {
		out.WriteString(s[copied:])
		L.Push(glua.LString(out.String()))
	}
	L.Push(glua.LNumber(n))
	return 2
}

// outBuf builds a builtin's result, charging each growth of its buffer to
// the VM before allocating it, so that a result past the engine's string
// limit is refused before it is built.
type outBuf struct {
	v    *vm
	L    *glua.LState
	what string
	b    []byte
}

// WriteString appends s; it never fails, and raises a Lua error (through
// vm.charge) when the result would pass the string limit.
func (o *outBuf) WriteString(s string) (int, error) {
	if len(o.b)+len(s) > cap(o.b) {
		o.grow(len(s))
	}
	o.b = append(o.b, s...)
	return len(s), nil
}

func (o *outBuf) grow(n int) {
	need := int64(len(o.b)) + int64(n)
	limit := int64(o.v.eng.maxStr)
	if need > limit {
		o.v.charge(o.L, o.what, need) // raises
	}
	size := min(max(2*int64(cap(o.b)), need, 64), limit)
	o.v.charge(o.L, o.what, size)
	b := make([]byte, len(o.b), size)
	copy(b, o.b)
	o.b = b
}

// String returns the result and forgets it. The string shares the buffer,
// as strings.Builder's does: the buffer is never written again, and a
// copy of a result of up to the string limit would double its cost.
func (o *outBuf) String() string {
	s := unsafe.String(unsafe.SliceData(o.b), len(o.b))
	o.b = nil
	return s
}

// strFormat is string.format with its result bounded: widths and
// precisions past 1000 are refused ("%999999999d", and "%.[1]999999f",
// where Go's explicit argument index comes before the precision), and an
// explicit index charges every later verb the longest argument (any
// argument, any number of times); the result's
// size, estimated from the format and the arguments' lengths, is charged
// before gopher-lua's string.format (Go's fmt underneath) builds it.
func (v *vm) strFormat(L *glua.LState) int {
	f := L.CheckString(1)
	top := L.GetTop()
	argLen := func(i int) int64 {
		switch a := L.Get(i).(type) {
		case glua.LString:
			return int64(len(a))
		default:
			return 0 // a number, or "table: 0x...": the constant below covers it
		}
	}
	var longest int64
	for i := 2; i <= top; i++ {
		longest = max(longest, argLen(i))
	}
	size, arg, indexed := int64(len(f)), 2, false
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		j := i + 1
		num, pad := 0, 0
	spec:
		for ; j < len(f); j++ {
			switch c := f[j]; {
			case c >= '0' && c <= '9':
				num = num*10 + int(c-'0')
				if num > 1000 {
					L.ArgError(1, "format width or precision larger than 1000")
				}
			case c == '[':
				// Go's explicit argument index. It may come before the
				// precision ("%.[1]1000000f" is a megabyte of zeros), so
				// the scan goes on past it: its own digits are no width,
				// but those after it are.
				k := strings.IndexByte(f[j:], ']')
				if k < 0 {
					break spec // no index: the verb case below
				}
				indexed = true
				pad += num
				num = 0
				j += k
			case strings.IndexByte("-+ #.", c) >= 0:
				pad += num
				num = 0
			default:
				break spec
			}
		}
		pad += num
		i = j
		if j == len(f) || f[j] == '%' {
			continue
		}
		// The verb's worst case per byte of a string argument: %q quotes
		// a byte in up to 4 (Go's \xff), "% x" writes 3; the constant
		// covers numbers (%.1000f of 1e308 is 1310 bytes with the pad),
		// the "%!v(...)" of a bad verb and the quotes.
		factor := int64(1)
		switch f[j] {
		case 'q':
			factor = 4
		case 'x', 'X':
			factor = 3
		case '[': // an unclosed index, which Go reports as a bad index
			indexed = true
		}
		a := longest
		if !indexed {
			a = 0
			if arg <= top {
				a = argLen(arg)
			}
			arg++
		}
		size += int64(pad) + factor*a + 400
	}
	v.charge(L, "string.format", size)
	L.Push(v.origFormat)
	for i := 1; i <= top; i++ {
		L.Push(L.Get(i))
	}
	L.Call(top, 1)
	return 1
}

// strCase is string.upper or string.lower. They keep gopher-lua's
// Unicode case mapping, under which a result can be longer than its
// subject (an invalid UTF-8 byte becomes the 3-byte U+FFFD), so the
// result's exact size is charged first; ASCII, the common case, maps
// byte for byte.
func (v *vm) strCase(what string, conv func(string) string, mapRune func(rune) rune) glua.LGFunction {
	return func(L *glua.LState) int {
		s := L.CheckString(1)
		size := int64(len(s))
		for i := 0; i < len(s); i++ {
			if s[i] >= utf8.RuneSelf {
				size = 0
				for _, r := range s {
					size += int64(utf8.RuneLen(mapRune(r)))
				}
				break
			}
		}
		v.charge(L, what, size)
		L.Push(glua.LString(conv(s)))
		return 1
	}
}

// tabConcat is table.concat, with gopher-lua's handling of the range
// (i and j are clamped to the table's length), and the result's length
// computed and charged before it is built.
func (v *vm) tabConcat(L *glua.LState) int {
	tbl := L.CheckTable(1)
	sep := L.OptString(2, "")
	i := L.OptInt(3, 1)
	j := L.OptInt(4, tbl.Len())
	if L.GetTop() == 3 && (i > tbl.Len() || i < 1) {
		L.Push(glua.LString(""))
		return 1
	}
	i = max(min(i, tbl.Len()), 1)
	j = min(j, tbl.Len())
	if i > j {
		L.Push(glua.LString(""))
		return 1
	}
	size := int64(len(sep)) * int64(j-i)
	for k := i; k <= j; k++ {
		switch x := tbl.RawGetInt(k).(type) {
		case glua.LString:
			size += int64(len(x))
		case glua.LNumber:
			size += int64(numberLen(x))
		default:
			L.RaiseError("invalid value (%s) at index %d in table for concat", x.Type().String(), k)
		}
	}
	v.charge(L, "table.concat", size)
	var b strings.Builder
	b.Grow(int(size))
	for k := i; k <= j; k++ {
		if k > i {
			b.WriteString(sep)
		}
		b.WriteString(glua.LVAsString(tbl.RawGetInt(k)))
	}
	L.Push(glua.LString(b.String()))
	return 1
}

// numberLen is the length of n as gopher-lua writes it (LNumber.String:
// an integer's digits, else Go's %v of the float), without allocating.
func numberLen(n glua.LNumber) int {
	var buf [32]byte
	f := float64(n)
	if f == float64(int64(f)) {
		return len(strconv.AppendInt(buf[:0], int64(f), 10))
	}
	return len(strconv.AppendFloat(buf[:0], f, 'g', -1, 64))
}

// maxResults bounds the values unpack and string.byte push: the most
// the Lua stack takes (vmOptions.RegistryMaxSize).
const maxResults = 256 * 1024

// reserve makes room for n more values on L's stack in one step.
// gopher-lua's stack grows by a fixed step per push past its end, which
// for a quarter million values copies the stack hundreds of times.
func reserve(L *glua.LState, n int) {
	top := L.GetTop()
	L.SetTop(top + n) // raises "registry overflow" when there is no room
	L.SetTop(top)
}

// resultCount is the number of values from i to j (inclusive), or -1 when
// that is more than maxResults (however large i and j).
func resultCount(i, j int) int {
	if i > j {
		return 0
	}
	if n := uint64(j) - uint64(i); n < maxResults {
		return int(n) + 1
	}
	return -1
}

// unpack is Lua 5.1's unpack, refusing ranges the stack cannot hold
// before pushing anything.
func unpack(L *glua.LState) int {
	tb := L.CheckTable(1)
	i := L.OptInt(2, 1)
	j := L.OptInt(3, tb.Len())
	n := resultCount(i, j)
	if n < 0 {
		L.RaiseError("too many results to unpack")
	}
	reserve(L, n)
	for k := range n {
		L.Push(tb.RawGetInt(i + k))
	}
	return n
}

// strByte is string.byte, growing the stack once for the bytes it
// returns. As in Lua 5.1, j defaults to i: gopher-lua's returned every
// byte from i on, so that s:byte() on a large message pushed values until
// the stack overflowed.
func strByte(L *glua.LState) int {
	s := L.CheckString(1)
	i := L.OptInt(2, 1)
	j := L.OptInt(3, i)
	n := len(s)
	if i < 0 {
		i = max(i+n+1, 0)
	}
	if j < 0 {
		j += n + 1
	}
	i, j = max(i, 1), min(j, n)
	count := resultCount(i, j)
	if count < 0 {
		L.RaiseError("string slice too long")
	}
	reserve(L, count)
	for k := range count {
		L.Push(glua.LNumber(s[i-1+k]))
	}
	return count
}

// chunkLimit is the most source loadstring and load compile: maxChunk,
// or the string limit when that is lower.
func (v *vm) chunkLimit() int { return min(maxChunk, v.eng.maxStr) }

// loadString is loadstring(s [, chunkname]).
func (v *vm) loadString(L *glua.LState) int {
	src := L.CheckString(1)
	return v.compile(L, "loadstring", src, L.OptString(2, "<string>"))
}

// load is load(f [, chunkname]): the chunk is f's results, concatenated
// until it returns nil or "", and refused as soon as it passes the limit.
func (v *vm) load(L *glua.LState) int {
	const what = "load"
	fn := L.CheckFunction(1)
	name := L.OptString(2, "?")
	top := L.GetTop()
	var b strings.Builder
	for {
		L.SetTop(top)
		L.Push(fn)
		L.Call(0, 1)
		ret := L.Get(-1)
		if ret == glua.LNil {
			break
		}
		if !glua.LVCanConvToString(ret) {
			L.SetTop(top)
			L.Push(glua.LNil)
			L.Push(glua.LString("reader function must return a string"))
			return 2
		}
		piece := glua.LVAsString(ret)
		if piece == "" {
			break
		}
		if b.Len()+len(piece) > v.chunkLimit() {
			L.SetTop(top)
			return loadFailed(L, fmt.Errorf("%s: chunk of at least %d bytes exceeds the limit of %d bytes", what, b.Len()+len(piece), v.chunkLimit()))
		}
		b.WriteString(piece)
	}
	L.SetTop(top)
	return v.compile(L, what, b.String(), name)
}

// compile compiles src after checking its size and nesting, and returns
// the function, or nil and the error, as Lua's load functions do.
func (v *vm) compile(L *glua.LState, what, src, name string) int {
	if limit := v.chunkLimit(); len(src) > limit {
		return loadFailed(L, fmt.Errorf("%s: chunk of %d bytes exceeds the limit of %d bytes", what, len(src), limit))
	}
	v.charge(L, what, int64(len(src)))
	if err := checkNesting(src, maxNesting); err != nil {
		return loadFailed(L, fmt.Errorf("%s: %w", what, err))
	}
	fn, err := L.Load(strings.NewReader(src), name)
	if err != nil {
		return loadFailed(L, err)
	}
	L.Push(fn)
	return 1
}

func loadFailed(L *glua.LState, err error) int {
	L.Push(glua.LNil)
	L.Push(glua.LString(err.Error()))
	return 2
}

// errTooNested is checkNesting's error.
var errTooNested = errors.New("chunk has too many syntax levels")

// checkNesting refuses source that nests deeper than limit, scanning its
// tokens once, without parsing. It counts what makes gopher-lua's parser
// and compiler recurse: open brackets ( [ {, open blocks (function, if,
// do, repeat, closed by end or until), and within an expression, runs of
// the unary operators - not # and chains of the arithmetic and
// concatenation operators + - * / % ^ .., which nest one level each in
// gopher-lua's syntax tree, and which it compiles in time quadratic in
// their length or worse: 130,000 of "- " or "a+" take it minutes. (Lua
// 5.1 itself nests only the right-associative .. and ^; a chain of more
// than 200 + in one expression, which it accepts, is refused here.)
// Comparisons, and, or, commas and statements end a chain; suffixes
// (a.b.c, f()()) are not counted. The count estimates the depth, it is
// not a parser: it needs only to accept real code and refuse what would
// nest thousands deep.
func checkNesting(src string, limit int) error {
	type level struct{ run, unary int }
	var (
		stack   []level // the enclosing brackets and blocks
		depth   int     // their levels, including their expression runs
		run     int     // .. and ^ in the current expression
		unary   int     // consecutive unary operators
		operand bool    // the last token ends an operand, so '-' is binary
	)
	over := func() bool { return depth+run+unary > limit }
	tooDeep := func() error {
		return fmt.Errorf("%w (more than %d nested brackets, blocks or operators)", errTooNested, limit)
	}
	open := func() {
		stack = append(stack, level{run, unary})
		depth += 1 + run + unary
		run, unary = 0, 0
	}
	closeLevel := func() {
		if len(stack) == 0 {
			return // unbalanced: the parser will say so
		}
		l := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		depth -= 1 + l.run + l.unary
		run, unary = l.run, 0
	}
	isName := func(c byte) bool {
		return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(src) && src[i+1] == '-': // a comment
			i += 2
			if end, ok := longBracket(src, i); ok {
				i = end
			} else if nl := strings.IndexByte(src[i:], '\n'); nl >= 0 {
				i += nl + 1
			} else {
				i = len(src)
			}
			continue
		case c == '[':
			if end, ok := longBracket(src, i); ok { // a long string
				i, operand, unary = end, true, 0
				continue
			}
			open()
			operand = false
		case c == '(' || c == '{':
			open()
			operand = false
		case c == ')' || c == ']' || c == '}':
			closeLevel()
			operand = true
		case c == '"' || c == '\'':
			for i++; i < len(src) && src[i] != c && src[i] != '\n'; i++ {
				if src[i] == '\\' {
					i++
				}
			}
			operand, unary = true, 0
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(src) && src[i+1] >= '0' && src[i+1] <= '9':
			for i++; i < len(src) && (isName(src[i]) || src[i] == '.' ||
				(src[i] == '+' || src[i] == '-') && strings.IndexByte("eEpP", src[i-1]) >= 0); i++ {
			}
			operand, unary = true, 0
			continue
		case isName(c):
			j := i + 1
			for j < len(src) && isName(src[j]) {
				j++
			}
			switch src[i:j] {
			case "function", "if", "do", "repeat":
				run, unary = 0, 0
				open()
				operand = false
			case "end", "until":
				closeLevel()
				run, operand = 0, c == 'e' // "end" may close a function expression
			case "not":
				unary++
				operand = false
			case "nil", "true", "false":
				operand, unary = true, 0
			case "and", "or", "local", "return", "then", "else", "elseif", "while", "for", "in", "break":
				run, unary, operand = 0, 0, false
			default:
				operand, unary = true, 0
			}
			i = j
			if over() {
				return tooDeep()
			}
			continue
		case c == '.' && strings.HasPrefix(src[i:], "..."):
			i += 3
			operand, unary = true, 0
			continue
		case c == '.' && strings.HasPrefix(src[i:], ".."):
			i++
			run++
			operand = false
		case c == '-' && !operand, c == '#':
			unary++
		case strings.IndexByte("^+-*/%", c) >= 0:
			run++
			operand = false
		case c == '=' || c == '~' || c == '<' || c == '>' || c == ',' || c == ';':
			run, unary, operand = 0, 0, false
		default: // : .
			operand = false
		}
		i++
		if over() {
			return tooDeep()
		}
	}
	return nil
}

// longBracket reports whether src[i:] starts with a long bracket ([[,
// [=[, ...) and if so returns the offset past its closing bracket (the
// end of src when it has none).
func longBracket(src string, i int) (int, bool) {
	if i >= len(src) || src[i] != '[' {
		return 0, false
	}
	j := i + 1
	for j < len(src) && src[j] == '=' {
		j++
	}
	if j >= len(src) || src[j] != '[' {
		return 0, false
	}
	closing := "]" + strings.Repeat("=", j-i-1) + "]"
	if end := strings.Index(src[j+1:], closing); end >= 0 {
		return j + 1 + end + len(closing), true
	}
	return len(src), true
}
