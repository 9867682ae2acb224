package luapat

import (
	"io"
	"strconv"
	"strings"
)

const (
	// MaxCaptures is the most captures one pattern may open
	// (LUA_MAXCAPTURES); one more is the error "too many captures".
	MaxCaptures = 32
	// MaxDepth bounds the matcher's recursion (MAXCCALLS in lstrlib.c):
	// every capture, optional item and repetition that must try what
	// follows it nests one level, and a pattern that needs more than
	// MaxDepth levels fails with "pattern too complex" instead of growing
	// the stack without bound.
	MaxDepth = 200
	// CheckInterval is how many steps a Matcher takes between calls to its
	// Check function. A step is one visit of a pattern item at one subject
	// position (or one subject byte scanned by a repetition, a %b or a
	// back-reference, or one pattern byte of a set scanned), so that the
	// time between two checks stays in the tens of microseconds whatever
	// the pattern does.
	CheckInterval = 4096
)

// Specials are the bytes that make a pattern more than a literal string
// (SPECIALS in lstrlib.c). string.find searches for a pattern that has
// none of them as plain text.
const Specials = "^$*+?.([%-"

// HasSpecials reports whether pattern has a byte of Specials.
func HasSpecials(pattern string) bool { return strings.ContainsAny(pattern, Specials) }

// literal reports whether the matcher would treat pattern (without its
// anchor) as a plain string: no Specials, and no ')' either, which is not
// in Specials but is a (malformed) capture end to the matcher.
func literal(pattern string) bool { return !strings.ContainsAny(pattern, Specials+")") }

// Error is a pattern the matcher refuses: a malformed one ("malformed
// pattern (missing ']')", "invalid capture index %2") or one past a limit
// ("pattern too complex", "too many captures"). Its text is the reference
// implementation's message.
type Error struct {
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// The capture lengths that are not lengths.
const (
	capUnfinished = -1 // opened, not yet closed
	capPosition   = -2 // a position capture "()"
)

const esc = '%'

// Matcher matches Lua patterns. The zero value is ready to use; a Matcher
// may be reused for any number of matches, one at a time (it is not safe
// for concurrent use). After a successful Find (or Iter.Next) it holds the
// captures of that match, read with NumCaptures and Capture.
type Matcher struct {
	// Check, when not nil, is called every CheckInterval steps of a match
	// (and at the start of a Matcher's first match); a non-nil result ends
	// the match, and Find or Next return exactly that error.
	Check func() error

	src, pat   string
	level      int // captures opened in the current match
	depth      int // recursion left before "pattern too complex"
	budget     int // steps left before the next Check
	start, end int // the last match
	capture    [MaxCaptures]struct{ init, len int }
}

// abort carries an error from deep in the matcher to the entry point that
// returns it: the recursion has no other use for an error value, so
// unwinding by panic keeps the hot path free of error checks (lstrlib.c
// longjmps for the same reason).
type abort struct{ err error }

func (m *Matcher) fail(msg string) { panic(abort{&Error{Msg: msg}}) }

// catch turns an abort back into an error; anything else goes on
// panicking.
func catch(err *error) {
	if r := recover(); r != nil {
		a, ok := r.(abort)
		if !ok {
			panic(r)
		}
		*err = a.err
	}
}

// step accounts n steps, checking in when the budget runs out.
func (m *Matcher) step(n int) {
	m.budget -= n
	if m.budget < 0 {
		m.poll()
	}
}

func (m *Matcher) poll() {
	m.budget = CheckInterval
	if m.Check != nil {
		if err := m.Check(); err != nil {
			panic(abort{err})
		}
	}
}

// Find looks for the first match of pattern in s at or after the byte
// offset init (clamped to [0, len(s)]), as string.find and string.match
// do: a leading '^' anchors the match at init. It returns the match as
// s[start:end], or start = -1 when there is none; err is a malformed
// pattern (*Error) or the error of Check.
func (m *Matcher) Find(s, pattern string, init int) (start, end int, err error) {
	defer catch(&err)
	init = min(max(init, 0), len(s))
	anchor := pattern != "" && pattern[0] == '^'
	if anchor {
		pattern = pattern[1:]
	}
	m.src, m.pat, m.level = s, pattern, 0
	if literal(pattern) {
		// A literal pattern matches where strings.Index finds it, and
		// much faster than byte-by-byte matching at every offset.
		i := -1
		if !anchor {
			i = strings.Index(s[init:], pattern)
		} else if strings.HasPrefix(s[init:], pattern) {
			i = 0
		}
		if i < 0 {
			return -1, -1, nil
		}
		m.start, m.end = init+i, init+i+len(pattern)
		return m.start, m.end, nil
	}
	for s1 := init; ; s1++ {
		m.level, m.depth = 0, MaxDepth
		if e := m.match(s1, 0); e >= 0 {
			m.start, m.end = s1, e
			return s1, e, nil
		}
		if anchor || s1 >= len(s) {
			return -1, -1, nil
		}
	}
}

// Capture is one capture of a match: the text s[Start:End] or, for a
// position capture "()", the byte offset Start (End equals Start).
type Capture struct {
	Start, End int
	Position   bool
}

// NumCaptures returns how many captures the pattern of the last match
// has.
func (m *Matcher) NumCaptures() int { return m.level }

// Capture returns capture i (from 0) of the last match. A pattern without
// captures has the whole match as capture 0, as in Lua. An index past the
// captures is the error "invalid capture index %N" (N counting from 1),
// and a capture the pattern opened but never closed, "unfinished
// capture".
func (m *Matcher) Capture(i int) (Capture, error) {
	if i < 0 || i >= m.level {
		if i != 0 {
			return Capture{}, &Error{Msg: "invalid capture index %" + strconv.Itoa(i+1)}
		}
		return Capture{Start: m.start, End: m.end}, nil
	}
	switch c := m.capture[i]; c.len {
	case capUnfinished:
		return Capture{}, &Error{Msg: "unfinished capture"}
	case capPosition:
		return Capture{Start: c.init, End: c.init, Position: true}, nil
	default:
		return Capture{Start: c.init, End: c.init + c.len}, nil
	}
}

// Expand writes repl to w with the last match's captures substituted, as
// string.gsub does with a replacement string in Lua 5.1: %0 is the whole
// match, %1 to %9 the captures (a position capture as its 1-based
// number), and % followed by any other byte is that byte ("%%" is "%"). A
// '%' that ends repl is the error "invalid use of '%' in replacement
// string" (Lua 5.1 would add a NUL byte). It returns w's first error, or a
// capture's.
func (m *Matcher) Expand(w io.StringWriter, repl string) error {
	for {
		i := strings.IndexByte(repl, esc)
		if i < 0 {
			break
		}
		if i > 0 {
			if _, err := w.WriteString(repl[:i]); err != nil {
				return err
			}
		}
		if i+1 == len(repl) {
			return &Error{Msg: "invalid use of '%' in replacement string"}
		}
		var piece string
		switch c := repl[i+1]; {
		case c == '0':
			piece = m.src[m.start:m.end]
		case c >= '1' && c <= '9':
			cp, err := m.Capture(int(c - '1'))
			if err != nil {
				return err
			}
			if cp.Position {
				piece = strconv.Itoa(cp.Start + 1)
			} else {
				piece = m.src[cp.Start:cp.End]
			}
		default:
			piece = repl[i+1 : i+2]
		}
		if _, err := w.WriteString(piece); err != nil {
			return err
		}
		repl = repl[i+2:]
	}
	if repl == "" {
		return nil
	}
	_, err := w.WriteString(repl)
	return err
}

// Iter walks the successive matches of a pattern in a string, for
// string.gmatch and string.gsub. The embedded Matcher holds the captures
// of the current match. Reset prepares a walk; the zero value walks
// nothing.
type Iter struct {
	Matcher
	pos    int  // where the next search starts; past len(src) when done
	anchor bool // the walk is one attempt at the start
	plain  bool // the pattern is literal: search it with strings.Index
}

// Reset starts a walk over the matches of pattern in s from the byte
// offset init (clamped to [0, len(s)]). With anchors, a leading '^'
// anchors the walk at init, so that it yields at most one match (as
// string.gsub does); without, '^' is an ordinary byte (as in
// string.gmatch).
func (it *Iter) Reset(s, pattern string, init int, anchors bool) {
	it.anchor = anchors && pattern != "" && pattern[0] == '^'
	if it.anchor {
		pattern = pattern[1:]
	}
	it.src, it.pat, it.level = s, pattern, 0
	it.pos = min(max(init, 0), len(s))
	it.plain = literal(pattern)
}

// Next finds the next match, s[start:end], and reports whether there was
// one. As in Lua 5.1, the search resumes where the last match ended, or
// one byte further after an empty match. err is a malformed pattern
// (*Error) or the error of Check.
func (it *Iter) Next() (start, end int, ok bool, err error) {
	defer catch(&err)
	s := it.src
	for src := it.pos; src <= len(s); src++ {
		e := -1
		if it.plain {
			if it.anchor {
				if strings.HasPrefix(s[src:], it.pat) {
					e = src + len(it.pat)
				}
			} else if i := strings.Index(s[src:], it.pat); i >= 0 {
				src += i
				e = src + len(it.pat)
			}
			it.level = 0
		} else {
			it.level, it.depth = 0, MaxDepth
			e = it.match(src, 0)
		}
		if e >= 0 {
			it.start, it.end = src, e
			switch {
			case it.anchor:
				it.pos = len(s) + 1
			case e == src:
				it.pos = src + 1
			default:
				it.pos = e
			}
			return src, e, true, nil
		}
		if it.anchor || it.plain {
			break
		}
	}
	it.pos = len(s) + 1
	return -1, -1, false, nil
}

// match reports where a match of the pattern from p, starting at subject
// offset s, ends (-1: no match). It is do_match in lstrlib.c, with the
// tail calls written as a loop.
func (m *Matcher) match(s, p int) int {
	if m.depth == 0 {
		m.fail("pattern too complex")
	}
	m.depth--
	pat := m.pat
loop:
	for p < len(pat) {
		m.step(1)
		switch pat[p] {
		case '(':
			if p+1 < len(pat) && pat[p+1] == ')' {
				s = m.startCapture(s, p+2, capPosition)
			} else {
				s = m.startCapture(s, p+1, capUnfinished)
			}
			break loop
		case ')':
			s = m.endCapture(s, p+1)
			break loop
		case '$':
			if p+1 == len(pat) { // only a final '$' anchors
				if s != len(m.src) {
					s = -1
				}
				break loop
			}
		case esc:
			if p+1 == len(pat) {
				break // classEnd reports the malformed pattern
			}
			switch c := pat[p+1]; {
			case c == 'b':
				if s = m.matchBalance(s, p+2); s >= 0 {
					p += 4
					continue loop
				}
				break loop
			case c == 'f':
				p += 2
				if p >= len(pat) || pat[p] != '[' {
					m.fail("missing '[' after '%f' in pattern")
				}
				ep := m.classEnd(p)
				var prev, cur byte // the subject's ends read as NUL, as in C
				if s > 0 {
					prev = m.src[s-1]
				}
				if s < len(m.src) {
					cur = m.src[s]
				}
				if !m.matchBracketClass(prev, p, ep-1) && m.matchBracketClass(cur, p, ep-1) {
					p = ep
					continue loop
				}
				s = -1
				break loop
			case c >= '0' && c <= '9':
				if s = m.matchCapture(s, c); s >= 0 {
					p += 2
					continue loop
				}
				break loop
			}
		}
		// A single-byte class with an optional repetition suffix.
		ep := m.classEnd(p)
		var suffix byte
		if ep < len(pat) {
			suffix = pat[ep]
		}
		if !m.singleMatch(s, p, ep) {
			if suffix == '*' || suffix == '?' || suffix == '-' { // may match empty
				p = ep + 1
				continue
			}
			s = -1
			break
		}
		switch suffix {
		case '?':
			if r := m.match(s+1, ep+1); r >= 0 {
				s = r
				break loop
			}
			p = ep + 1
		case '+':
			s = m.maxExpand(s+1, p, ep)
			break loop
		case '*':
			s = m.maxExpand(s, p, ep)
			break loop
		case '-':
			s = m.minExpand(s, p, ep)
			break loop
		default:
			s++
			p = ep
		}
	}
	m.depth++
	return s
}

// classEnd returns the index just past the single-byte class at p.
func (m *Matcher) classEnd(p int) int {
	pat := m.pat
	c := pat[p]
	p++
	switch c {
	case esc:
		if p >= len(pat) {
			m.fail("malformed pattern (ends with '%')")
		}
		return p + 1
	case '[':
		start := p
		if p < len(pat) && pat[p] == '^' {
			p++
		}
		for { // look for the ']'; the first byte of the set is never it
			if p >= len(pat) {
				m.fail("malformed pattern (missing ']')")
			}
			c := pat[p]
			p++
			if c == esc && p < len(pat) {
				p++ // an escaped byte, such as %]
			}
			if p < len(pat) && pat[p] == ']' {
				// A set is scanned at every visit: a long one costs
				// in proportion (see matchBracketClass).
				m.step(p - start)
				return p + 1
			}
		}
	default:
		return p
	}
}

// singleMatch reports whether the subject byte at s is in the class that
// spans pattern[p:ep].
func (m *Matcher) singleMatch(s, p, ep int) bool {
	if s >= len(m.src) {
		return false
	}
	c := m.src[s]
	switch pc := m.pat[p]; pc {
	case '.':
		return true
	case esc:
		return matchClass(c, m.pat[p+1])
	case '[':
		return m.matchBracketClass(c, p, ep-1)
	default:
		return pc == c
	}
}

// matchBracketClass reports whether c is in the set pattern[p:ec+1], from
// its '[' to its ']'. It costs a step per set byte it scans: a set is as
// long as the script makes it, and one step per test would let
// ("a"):rep(n):find("[" .. ("b"):rep(n) .. "a]*$") do n² work while the
// budget counted n.
func (m *Matcher) matchBracketClass(c byte, p, ec int) bool {
	in, end := inBracketClass(m.pat, c, p, ec)
	m.step(end - p)
	return in
}

// inBracketClass reports whether c is in the set pat[p:ec+1], and where
// the scan of the set stopped.
func inBracketClass(pat string, c byte, p, ec int) (bool, int) {
	in := true
	if pat[p+1] == '^' {
		in = false
		p++
	}
	for p++; p < ec; p++ {
		switch {
		case pat[p] == esc:
			p++
			if matchClass(c, pat[p]) {
				return in, p
			}
		case pat[p+1] == '-' && p+2 < ec:
			p += 2
			if pat[p-2] <= c && c <= pat[p] {
				return in, p
			}
		case pat[p] == c:
			return in, p
		}
	}
	return !in, p
}

// matchBalance matches %bxy, whose x is at pattern[p].
func (m *Matcher) matchBalance(s, p int) int {
	if p+1 >= len(m.pat) {
		m.fail("malformed pattern (missing arguments to '%b')")
	}
	src := m.src
	if s >= len(src) || src[s] != m.pat[p] {
		return -1
	}
	b, e := m.pat[p], m.pat[p+1]
	depth := 1
	for i := s + 1; i < len(src); i++ {
		switch src[i] {
		case e:
			if depth--; depth == 0 {
				m.step(i - s)
				return i + 1
			}
		case b:
			depth++
		}
	}
	m.step(len(src) - s)
	return -1
}

// maxExpand matches the longest run of the class at pattern[p:ep] from s
// that lets the rest of the pattern match. The run is counted a step per
// byte as it goes, so that a long run, of a costly set in particular, is
// polled while it is counted, not charged once it is done.
func (m *Matcher) maxExpand(s, p, ep int) int {
	i := 0
	if m.pat[p] == '.' {
		i = max(len(m.src)-s, 0)
		m.step(i)
	} else {
		for m.singleMatch(s+i, p, ep) {
			i++
			m.step(1)
		}
	}
	for ; i >= 0; i-- { // try with the most repetitions, then fewer
		if r := m.match(s+i, ep+1); r >= 0 {
			return r
		}
	}
	return -1
}

// minExpand matches the shortest run of the class at pattern[p:ep] from s
// that lets the rest of the pattern match.
func (m *Matcher) minExpand(s, p, ep int) int {
	for {
		if r := m.match(s, ep+1); r >= 0 {
			return r
		}
		if !m.singleMatch(s, p, ep) {
			return -1
		}
		s++
	}
}

func (m *Matcher) startCapture(s, p, what int) int {
	if m.level >= MaxCaptures {
		m.fail("too many captures")
	}
	m.capture[m.level].init = s
	m.capture[m.level].len = what
	m.level++
	r := m.match(s, p)
	if r < 0 {
		m.level-- // undo the capture
	}
	return r
}

func (m *Matcher) endCapture(s, p int) int {
	l := m.captureToClose()
	m.capture[l].len = s - m.capture[l].init
	r := m.match(s, p)
	if r < 0 {
		m.capture[l].len = capUnfinished // undo the close
	}
	return r
}

func (m *Matcher) captureToClose() int {
	for l := m.level - 1; l >= 0; l-- {
		if m.capture[l].len == capUnfinished {
			return l
		}
	}
	m.fail("invalid pattern capture")
	return 0
}

// matchCapture matches the back-reference %l (l a digit byte).
func (m *Matcher) matchCapture(s int, l byte) int {
	i := int(l) - '1'
	if i < 0 || i >= m.level || m.capture[i].len == capUnfinished {
		m.fail("invalid capture index %" + strconv.Itoa(i+1))
	}
	c := m.capture[i]
	if c.len < 0 { // a position capture matches nothing
		return -1
	}
	if len(m.src)-s >= c.len && m.src[s:s+c.len] == m.src[c.init:c.init+c.len] {
		m.step(c.len)
		return s + c.len
	}
	return -1
}

// The character classes, in the "C" locale of the reference: ASCII only.
const (
	clAlpha uint16 = 1 << iota
	clCntrl
	clDigit
	clLower
	clPunct
	clSpace
	clUpper
	clAlnum
	clXdigit
	clZero
	clNegate // in classOf: the class letter is upper case
)

// ctype has the classes of each byte; classOf, the class (and negation)
// each letter after '%' stands for, 0 for a byte that stands for itself.
var ctype, classOf = func() (ct, co [256]uint16) {
	for c := range 256 {
		var bits uint16
		switch {
		case c >= 'a' && c <= 'z':
			bits |= clAlpha | clLower | clAlnum
		case c >= 'A' && c <= 'Z':
			bits |= clAlpha | clUpper | clAlnum
		case c >= '0' && c <= '9':
			bits |= clDigit | clAlnum
		}
		if c < 0x20 || c == 0x7f {
			bits |= clCntrl
		}
		if c > 0x20 && c < 0x7f && bits&clAlnum == 0 {
			bits |= clPunct
		}
		if c == ' ' || (c >= '\t' && c <= '\r') {
			bits |= clSpace
		}
		if (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') {
			bits |= clXdigit
		}
		if c == 0 {
			bits |= clZero
		}
		ct[c] = bits
	}
	for l, bit := range map[byte]uint16{'a': clAlpha, 'c': clCntrl, 'd': clDigit, 'l': clLower,
		'p': clPunct, 's': clSpace, 'u': clUpper, 'w': clAlnum, 'x': clXdigit, 'z': clZero} {
		co[l] = bit
		co[l-'a'+'A'] = bit | clNegate
	}
	return ct, co
}()

// matchClass reports whether c is in the class %cl.
func matchClass(c, cl byte) bool {
	bits := classOf[cl]
	if bits == 0 {
		return cl == c
	}
	return (ctype[c]&bits&^clNegate != 0) != (bits&clNegate != 0)
}
