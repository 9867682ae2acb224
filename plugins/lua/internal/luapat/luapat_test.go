package luapat

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// The helpers below give Lua's view of a match, so that the cases can be
// the reference test suite's (lua-5.1-tests/pm.lua) nearly verbatim:
// offsets count from 1, position captures are numbers.

// luaFind is string.find: "start end captures..." or "nil".
func luaFind(t *testing.T, s, p string, init int) string {
	t.Helper()
	var m Matcher
	start, end, err := m.Find(s, p, init-1)
	if err != nil {
		return "error: " + err.Error()
	}
	if start < 0 {
		return "nil"
	}
	out := []string{strconv.Itoa(start + 1), strconv.Itoa(end)}
	for i := range m.NumCaptures() {
		out = append(out, capture(t, &m, i))
	}
	return strings.Join(out, " ")
}

// sub is pm.lua's f: the text string.find matched, or "nil".
func sub(t *testing.T, s, p string) string {
	t.Helper()
	var m Matcher
	start, end, err := m.Find(s, p, 0)
	if err != nil {
		t.Fatalf("find(%q, %q): %v", s, p, err)
	}
	if start < 0 {
		return "nil"
	}
	return s[start:end]
}

// luaMatch is string.match: the captures (or the whole match) joined by
// "|", or "nil".
func luaMatch(t *testing.T, s, p string) string {
	t.Helper()
	var m Matcher
	start, _, err := m.Find(s, p, 0)
	if err != nil {
		return "error: " + err.Error()
	}
	if start < 0 {
		return "nil"
	}
	var out []string
	for i := range max(m.NumCaptures(), 1) {
		out = append(out, capture(t, &m, i))
	}
	return strings.Join(out, "|")
}

func capture(t *testing.T, m *Matcher, i int) string {
	t.Helper()
	c, err := m.Capture(i)
	if err != nil {
		return "error: " + err.Error()
	}
	if c.Position {
		return strconv.Itoa(c.Start + 1)
	}
	return m.src[c.Start:c.End]
}

// gsub is string.gsub with a replacement string.
func gsub(s, p, repl string, limit int) (string, int, error) {
	var it Iter
	it.Reset(s, p, 0, true)
	var b strings.Builder
	n, last := 0, 0
	for limit < 0 || n < limit {
		start, end, ok, err := it.Next()
		if err != nil {
			return "", 0, err
		}
		if !ok {
			break
		}
		b.WriteString(s[last:start])
		if err := it.Expand(&b, repl); err != nil {
			return "", 0, err
		}
		last = end
		n++
	}
	b.WriteString(s[last:])
	return b.String(), n, nil
}

// gmatch is string.gmatch, collected: each match's captures joined by
// "|".
func gmatch(t *testing.T, s, p string) []string {
	t.Helper()
	var it Iter
	it.Reset(s, p, 0, false)
	var out []string
	for {
		_, _, ok, err := it.Next()
		if err != nil {
			t.Fatalf("gmatch(%q, %q): %v", s, p, err)
		}
		if !ok {
			return out
		}
		var caps []string
		for i := range max(it.NumCaptures(), 1) {
			caps = append(caps, capture(t, &it.Matcher, i))
		}
		out = append(out, strings.Join(caps, "|"))
	}
}

func TestFindPM(t *testing.T) {
	for _, tc := range []struct {
		s, p string
		init int
		want string
	}{
		{"", "", 1, "1 0"}, // empty patterns are tricky
		{"alo", "", 1, "1 0"},
		{"a\x00o a\x00o a\x00o", "a", 1, "1 1"},       // first position
		{"a\x00o a\x00o a\x00o", "a\x00o", 2, "5 7"},  // starts in the middle
		{"a\x00o a\x00o a\x00o", "a\x00o", 9, "9 11"}, // starts in the middle
		{"a\x00a\x00a\x00a\x00\x00ab", "\x00ab", 2, "9 11"},
		{"a\x00a\x00a\x00a\x00\x00ab", "b", 1, "11 11"}, // last position
		{"a\x00a\x00a\x00a\x00\x00ab", "b\x00", 1, "nil"},
		{"", "\x00", 1, "nil"},
		{"alo123alo", "12", 1, "4 5"},
		{"alo123alo", "^12", 1, "nil"},
		{"alo", "^a", 1, "1 1"},
		{"alo", "^l", 2, "2 2"}, // the anchor holds at init
		{"alo", "^l", 1, "nil"},
		{"abc", "", 4, "4 3"},
		{"abc", "b", 10, "nil"}, // init past the end is the end
		{"(\xe1lo)", "%(\xe1", 1, "1 2"},
		{"0123456789", "(.+(.?)())", 1, "1 10 0123456789  11"},
	} {
		if got := luaFind(t, tc.s, tc.p, tc.init); got != tc.want {
			t.Errorf("find(%q, %q, %d) = %q, want %q", tc.s, tc.p, tc.init, got, tc.want)
		}
	}
}

func TestSubPM(t *testing.T) {
	for _, tc := range []struct{ s, p, want string }{
		{"aloALO", "%l*", "alo"},
		{"aLo_ALO", "%a*", "aLo"},
		{"aaab", "a*", "aaa"},
		{"aaa", "^.*$", "aaa"},
		{"aaa", "b*", ""},
		{"aaa", "ab*a", "aa"},
		{"aba", "ab*a", "aba"},
		{"aaab", "a+", "aaa"},
		{"aaa", "^.+$", "aaa"},
		{"aaa", "b+", "nil"},
		{"aaa", "ab+a", "nil"},
		{"aba", "ab+a", "aba"},
		{"a$a", ".$", "a"},
		{"a$a", ".%$", "a$"},
		{"a$a", ".$.", "a$a"},
		{"a$a", "$$", "nil"},
		{"a$b", "a$", "nil"},
		{"a$a", "$", ""},
		{"", "b*", ""},
		{"aaa", "bb*", "nil"},
		{"aaab", "a-", ""},
		{"aaa", "^.-$", "aaa"},
		{"aabaaabaaabaaaba", "b.*b", "baaabaaabaaab"},
		{"aabaaabaaabaaaba", "b.-b", "baaab"},
		{"alo xo", ".o$", "xo"},
		{" \n isto \xe9 assim", "%S%S*", "isto"},
		{" \n isto \xe9 assim", "%S*$", "assim"},
		{" \n isto \xe9 assim", "[a-z]*$", "assim"},
		{"um caracter ? extra", "[^%sa-z]", "?"},
		{"", "a?", ""},
		{"\xe1", "\xe1?", "\xe1"},
		{"\xe1bl", "\xe1?b?l?", "\xe1bl"},
		{"  \xe1bl", "\xe1?b?l?", ""},
		{"aa", "^aa?a?a", "aa"},
		{"]]]\xe1b", "[^]]", "\xe1"}, // commented out in gopher-lua's copy
		{"]]]\xe1b", "[^%]]", "\xe1"},
		{"0alo alo", "%x*", "0a"},
		{"alo alo", "%C+", "alo alo"},
		{"(9 ((8))(\x00) 7) \x00\x00 a b ()(c)() a", "%b()", "(9 ((8))(\x00) 7)"},
		{"alo 'oi' alo", "%b''", "'oi'"},
		{"x[[a]]y", "%b[]", "[[a]]"},
		{"a\x00b", "%z", "\x00"},
		{"a\x00b", "%Z+", "a"},
		{"go!", "%g", "g"}, // %g is a 5.2 class; in 5.1 it is a 'g'
	} {
		if got := sub(t, tc.s, tc.p); got != tc.want {
			t.Errorf("find(%q, %q) matched %q, want %q", tc.s, tc.p, got, tc.want)
		}
	}
}

func TestMatchPM(t *testing.T) {
	for _, tc := range []struct{ s, p, want string }{
		{"alo xyzK", "(%w+)K", "xyz"},
		{"254 K", "(%d*)K", ""},
		{"alo ", "(%w*)$", ""},
		{"alo ", "(%w+)$", "nil"},
		{"\xe1lo alo", "^(((.).).* (%w*))$", "\xe1lo alo|\xe1l|\xe1|alo"},
		{"0123456789", "(.+(.?)())", "0123456789||11"},
		{"==========", "^([=]*)=%1$", "nil"},
		{"=======", "^(=*)=%1$", "==="},
		{"alo alx 123 b\x00o b\x00o", "(..*) %1", "b\x00o"},
		{"axz123= 4= 4 34", "(.+)=(.*)=%2 %1", "3| 4"},
		{"key = value", "^(%w+)%s*=%s*(%w+)$", "key|value"},
		{"  trim me  ", "^%s*(.-)%s*$", "trim me"},
		{"hello", "()ll()", "3|5"},
		{"x", "(a)", "nil"},
		{"THE (quick) fox", "%f[%a]%a+", "THE"},
		{"THE (quick) fox", "%f[%l]%a+", "quick"},
		{"abc", "%f[%z]", ""}, // the end of the subject reads as NUL
	} {
		if got := luaMatch(t, tc.s, tc.p); got != tc.want {
			t.Errorf("match(%q, %q) = %q, want %q", tc.s, tc.p, got, tc.want)
		}
	}
}

func TestSetsPM(t *testing.T) {
	abc := make([]byte, 256)
	for i := range abc {
		abc[i] = byte(i)
	}
	strset := func(p string) string {
		var b strings.Builder
		var it Iter
		it.Reset(string(abc), p, 0, true)
		for {
			start, end, ok, err := it.Next()
			if err != nil {
				t.Fatalf("%q: %v", p, err)
			}
			if !ok {
				return b.String()
			}
			b.WriteString(string(abc[start:end]))
		}
	}
	if got := len(strset("[\xc8-\xd2]")); got != 11 {
		t.Errorf("[\\200-\\210]: %d bytes", got)
	}
	for _, tc := range []struct{ p, want string }{
		{"[a-z]", "abcdefghijklmnopqrstuvwxyz"},
		{"[a-z%d]", strset("[%da-uu-z]")},
		{"[a-]", "-a"}, // commented out in gopher-lua's copy
		{"[a%-]", "-a"},
		{"[^%W]", strset("[%w]")},
		{"[]%%]", "%]"}, // commented out in gopher-lua's copy
		{"[%]%%]", "%]"},
		{"[a%-z]", "-az"},
		{"[%^%[%-a%]%-b]", "-[]^ab"},
		{"%Z", strset("[\x01-\xff]")},
		{".", strset("[\x01-\xff%z]")},
		{"%s", "\t\n\v\f\r "},
		{"%p", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"},
		{"%c", string(abc[:32]) + "\x7f"},
		{"%x", "0123456789ABCDEFabcdef"},
		{"%u", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
	} {
		if got := strset(tc.p); got != tc.want {
			t.Errorf("strset(%q) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestGsubPM(t *testing.T) {
	for _, tc := range []struct {
		s, p, repl string
		limit      int
		want       string
		n          int
	}{
		{"\xe1lo \xe1lo", "\xe1", "x", -1, "xlo xlo", 2},
		{"alo \xe1lo  ", " +$", "", -1, "alo \xe1lo", 1},        // trim
		{"  alo alo  ", "^%s*(.-)%s*$", "%1", -1, "alo alo", 1}, // double trim
		{"alo  alo  \n 123\n ", "%s+", " ", -1, "alo alo 123 ", 3},
		{"ab\xe1 d", "(.)", "%1@", -1, "a@b@\xe1@ @d@", 5},
		{"ab\xe1 d", "", "@", -1, "@a@b@\xe1@ @d@", 6},
		{"ab\xe1d", "(.)", "%0@", 2, "a@b@\xe1d", 2},
		{"alo alo", "()[al]", "%1", -1, "12o 56o", 4},
		{"abc=xyz", "(%w*)(%p)(%w+)", "%3%2%1-%0", -1, "xyz=abc-abc=xyz", 1},
		{"abc", "%w", "%1%0", -1, "aabbcc", 3},
		{"abc", "%w+", "%0%1", -1, "abcabc", 1},
		{"\xe1\xe9\xed", "$", "\x00\xf3\xfa", -1, "\xe1\xe9\xed\x00\xf3\xfa", 1},
		{"", "^", "r", -1, "r", 1},
		{"", "$", "r", -1, "r", 1},
		{"abc", "%w*", "-", -1, "--", 2}, // Lua 5.1: the empty match after "abc" counts
		{"hello world", "o", "0", 1, "hell0 world", 1},
		{"hello", "l", "%%", -1, "he%%o", 2},
		{"hello", "l", "%x", -1, "hexxo", 2}, // Lua 5.1: %x is x
		{"hello", "^h", "H", -1, "Hello", 1},
		{"hhh", "^h", "H", -1, "Hhh", 1}, // anchored: one attempt
		{"a.b.c", ".", "-", -1, "-----", 5},
		{"a.b.c", "%.", "-", -1, "a-b-c", 2},
		{"a.b.c", "b", "", 0, "a.b.c", 0},
	} {
		got, n, err := gsub(tc.s, tc.p, tc.repl, tc.limit)
		if err != nil || got != tc.want || n != tc.n {
			t.Errorf("gsub(%q, %q, %q, %d) = %q, %d, %v; want %q, %d", tc.s, tc.p, tc.repl, tc.limit, got, n, err, tc.want, tc.n)
		}
	}
}

func TestGmatchPM(t *testing.T) {
	for _, tc := range []struct {
		s, p string
		want []string
	}{
		{"abcde", "()", []string{"1", "2", "3", "4", "5", "6"}},
		{"first second word", "%w+", []string{"first", "second", "word"}},
		{"xuxx uu ppar r", "()(.)%2", []string{"3|x", "6|u", "9|p"}},
		{"13 14 10 = 11, 15= 16, 22=23", "(%d+)%s*=%s*(%d+)", []string{"10|11", "15|16", "22|23"}},
		{"a=1&b=2&c=3", "(%w+)=(%w+)", []string{"a|1", "b|2", "c|3"}},
		{"abc", "%w*", []string{"abc", ""}},  // Lua 5.1
		{"^a^a", "^a", []string{"^a", "^a"}}, // '^' does not anchor gmatch
		{"one two", "x", nil},                // plain, no match
		{"a,b,,c", "([^,]*)", []string{"a", "", "b", "", "", "c", ""}},
	} {
		got := gmatch(t, tc.s, tc.p)
		if strings.Join(got, ",") != strings.Join(tc.want, ",") || len(got) != len(tc.want) {
			t.Errorf("gmatch(%q, %q) = %q, want %q", tc.s, tc.p, got, tc.want)
		}
	}
}

// TestErrors: malformed patterns are refused with the reference's
// messages.
func TestErrors(t *testing.T) {
	for _, tc := range []struct{ s, p, want string }{
		{"alo", "%", "malformed pattern (ends with '%')"},
		{"alo", "a%", "malformed pattern (ends with '%')"},
		{"alo", "[a", "malformed pattern (missing ']')"},
		{"alo", "[a%]", "malformed pattern (missing ']')"},
		{"alo", "[^]", "malformed pattern (missing ']')"},
		{"alo", "[", "malformed pattern (missing ']')"},
		{"alo", ".)", "invalid pattern capture"},
		{"alo", "(%1)", "invalid capture index %1"},
		{"alo", "(%0)", "invalid capture index %0"},
		{"alo", "(.)%2", "invalid capture index %2"},
		{"alo", "%f", "missing '[' after '%f' in pattern"},
		{"alo", "%fa", "missing '[' after '%f' in pattern"},
		{"alo", "%b", "malformed pattern (missing arguments to '%b')"},
		{"alo", "%b(", "malformed pattern (missing arguments to '%b')"},
		{"alo", strings.Repeat("()", 33), "too many captures"},
		{strings.Repeat("a", 300), strings.Repeat("a?", 250), "pattern too complex"},
		{strings.Repeat("a", 300), strings.Repeat("a-", 250) + "b", "pattern too complex"},
	} {
		var m Matcher
		_, _, err := m.Find(tc.s, tc.p, 0)
		var pe *Error
		if !errors.As(err, &pe) || pe.Msg != tc.want {
			t.Errorf("find(%q, %q): %v, want %q", tc.s[:min(len(tc.s), 10)], tc.p, err, tc.want)
		}
	}
	// An unfinished capture is an error only when it is read.
	if got := luaMatch(t, "alo", "(."); got != "error: unfinished capture" {
		t.Errorf("match(alo, \"(.\"): %q", got)
	}
	if got, n, err := gsub("alo", "(.", "x", -1); got != "xxx" || n != 3 || err != nil {
		t.Errorf("gsub(alo, \"(.\", x): %q %d %v", got, n, err)
	}
	if _, _, err := gsub("alo", "(.)", "%2", -1); err == nil || err.Error() != "invalid capture index %2" {
		t.Errorf("gsub(alo, \"(.)\", %%2): %v", err)
	}
	if _, _, err := gsub("alo", ".", "50%", -1); err == nil || err.Error() != "invalid use of '%' in replacement string" {
		t.Errorf("gsub(alo, \".\", 50%%): %v", err)
	}
	// Depth is per match: many repetitions in sequence are fine.
	if got := sub(t, strings.Repeat("ab", 300), strings.Repeat("a?b?", 90)); len(got) != 180 {
		t.Errorf("a?b? x 90 matched %d bytes", len(got))
	}
}

// TestBigStrings are pm.lua's: linear patterns on 300 KB.
func TestBigStrings(t *testing.T) {
	a := strings.Repeat("a", 300000)
	for _, tc := range []struct {
		p  string
		ok bool
	}{{"^a*.?$", true}, {"^a*.?b$", false}, {"^a-.?$", true}} {
		var m Matcher
		start, _, err := m.Find(a, tc.p, 0)
		if err != nil || (start >= 0) != tc.ok {
			t.Errorf("%s: %d %v", tc.p, start, err)
		}
	}
}

var errStop = errors.New("stop")

// TestCheckStopsMatching: a pathological match calls Check every
// CheckInterval steps and ends with its error.
func TestCheckStopsMatching(t *testing.T) {
	// Trimming is linear when the spaces end the subject, quadratic when
	// something follows them.
	spaces := strings.Repeat(" ", 30000) + "x"
	for _, tc := range []struct{ name, s, p string }{
		{"trim", "x" + spaces, "^%s*(.-)%s*$"},
		{"cubic find", spaces, "%s*%s*y"},
		{"lazy", spaces, ".-.-.-y"},
		{"back-reference", strings.Repeat("a", 30000), "(a*)%1b"},
		{"balance", strings.Repeat("(", 30000), "%b()"},
		{"frontier", spaces, "%f[%s]%s*%s*y"},
		{"captures", spaces, "(%s*)(%s*)(%s*)y"},
		{"set", spaces, "[%s%d%a]*[%s]*y"},
		// One test against a long set is as much work as the set is long.
		{"long set", strings.Repeat("a", 20000), "[" + strings.Repeat("b", 20000) + "a]*$"},
	} {
		calls := 0
		m := Matcher{Check: func() error {
			if calls++; calls == 100 {
				return errStop
			}
			return nil
		}}
		_, _, err := m.Find(tc.s, tc.p, 0)
		if err != errStop {
			t.Errorf("%s: %v after %d checks", tc.name, err, calls)
		}
		// The matcher is usable after an abort.
		m.Check = nil
		if start, end, err := m.Find("  ab  ", "^%s*(.-)%s*$", 0); start != 0 || end != 6 || err != nil {
			t.Errorf("%s: reuse: %d %d %v", tc.name, start, end, err)
		}
		if c, _ := m.Capture(0); c.Start != 2 || c.End != 4 {
			t.Errorf("%s: reuse: capture %+v", tc.name, c)
		}
	}
	// The iterator checks too, across calls.
	calls := 0
	var it Iter
	it.Check = func() error {
		if calls++; calls == 3 {
			return errStop
		}
		return nil
	}
	it.Reset(spaces, "%s*%s*y", 0, false)
	if _, _, _, err := it.Next(); err != errStop {
		t.Errorf("iter: %v", err)
	}
}

// TestCheckInterval: Check is called about every CheckInterval steps, not
// far less often, whatever the subject's size.
func TestCheckInterval(t *testing.T) {
	calls := 0
	m := Matcher{Check: func() error { calls++; return nil }}
	s := "x" + strings.Repeat(" ", 2000) + "x"
	if start, _, err := m.Find(s, "^%s*(.-)%s*$", 0); start != 0 || err != nil {
		t.Fatal(start, err)
	}
	// Between n²/2 and n² steps.
	if want := 2000 * 2000 / CheckInterval; calls < want/4 || calls > 2*want {
		t.Errorf("%d checks, want about %d", calls, want)
	}
}

// TestCheckIntervalLongRuns: the steps a repetition counts and the set
// bytes a test scans reach Check as they are taken, not once the run is
// counted: a long run of a long set is quadratic work in one maxExpand.
func TestCheckIntervalLongRuns(t *testing.T) {
	for _, tc := range []struct {
		name, s, p string
		steps      int
	}{
		{"run", strings.Repeat("a", 1000000), "a*$", 1000000},
		{"set run", strings.Repeat("a", 3000), "[" + strings.Repeat("b", 3000) + "a]*$", 3000 * 3000},
		{"set visits", strings.Repeat("a", 3000), "^" + strings.Repeat("["+strings.Repeat("b", 3000)+"a]", 3000), 2 * 3000 * 3000},
	} {
		calls := 0
		m := Matcher{Check: func() error { calls++; return nil }}
		if start, _, err := m.Find(tc.s, tc.p, 0); start != 0 || err != nil {
			t.Fatal(tc.name, start, err)
		}
		if want := tc.steps / CheckInterval; calls < want/2 {
			t.Errorf("%s: %d checks, want about %d", tc.name, calls, want)
		}
	}
}

func TestHasSpecials(t *testing.T) {
	for p, want := range map[string]bool{"": false, "abc": false, "a.b": true, "a%": true, "x-y": true, "(": true, ")": false, "]": false, "^a": true, "a$": true} {
		if HasSpecials(p) != want {
			t.Errorf("HasSpecials(%q) = %v", p, !want)
		}
	}
}
