package luapat

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/yuin/gopher-lua/pm"
)

// FuzzFind compares Find with gopher-lua's matcher (package pm, which
// string.find used before) on the patterns both accept.
//
// pm is not the reference implementation, and where it departs from it
// luapat follows the reference; the fuzzer skips those patterns
// (pmDiverges) rather than compare them:
//   - pm has no frontier: it reads %f as the letter f;
//   - pm reads a back-reference to a position capture ("()%1") as the
//     empty string, where in the reference it never matches;
//   - in a set, pm makes a range of an escaped class ("[%a-z]"), which
//     matches nothing, where the reference reads "%a", "-" and "z", and
//     a range that ends in '%' ("[a-%]...") reads differently too.
//
// Patterns pm refuses and the reference accepts (a '%' that escapes
// nothing, "(" left open, "%b" without two bytes) or the other way round
// (a back-reference to an open capture; depth and capture limits) are not
// compared either, since only one side has a result.
func FuzzFind(f *testing.F) {
	for _, seed := range []struct {
		s, p string
		init int
	}{
		{"hello world", "o w", 0},
		{"  trim me  ", "^%s*(.-)%s*$", 0},
		{"key=value&x=1", "(%w+)=(%w+)", 4},
		{"aaab", "a-b", 0},
		{"THE (quick) fox", "%((%a+)%)", 0},
		{"x = [[a]]", "%b[]", 0},
		{"abcabc", "(a)(b)c%1%2", 0},
		{"a.b-c", "[%.%-]", 0},
		{"]]]x", "[^]]", 0},
		{"0x1F", "^0[xX](%x+)$", 0},
		{"a$b$", ".$", 0},
		{"hello", "()ll()", 0},
		{"", "", 0},
		{"\x00\x01\xff", "[\x00-\x02]+", 0},
	} {
		f.Add(seed.s, seed.p, seed.init)
	}
	f.Fuzz(func(t *testing.T, s, p string, init int) {
		// Small inputs and few repetitions: pm backtracks without limit
		// and cannot be stopped.
		if len(s) > 40 || len(p) > 24 || strings.Count(p, "*")+strings.Count(p, "+")+strings.Count(p, "-")+strings.Count(p, "?") > 3 || pmDiverges(p) {
			t.Skip()
		}
		init = min(max(init, 0), len(s))
		want, ok := pmFind(s, p, init)
		if !ok {
			t.Skip()
		}
		got, err := find(s, p, init)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				t.Skip() // a pattern only pm accepts
			}
			t.Fatalf("find(%q, %q, %d): %v", s, p, init, err)
		}
		if got != want {
			t.Fatalf("find(%q, %q, %d) = %s, pm says %s", s, p, init, got, want)
		}
	})
}

var errTooLong = errors.New("too long")

// find renders Find's result as pmFind does.
func find(s, p string, init int) (string, error) {
	checks := 0
	m := Matcher{Check: func() error {
		if checks++; checks > 1000 {
			return errTooLong
		}
		return nil
	}}
	start, end, err := m.Find(s, p, init)
	if err != nil || start < 0 {
		return "nil", err
	}
	out := fmt.Sprintf("%d-%d", start, end)
	for i := range m.NumCaptures() {
		c, err := m.Capture(i)
		if err != nil {
			return "", err
		}
		if c.Position {
			out += fmt.Sprintf(" @%d", c.Start)
		} else {
			out += fmt.Sprintf(" %q", s[c.Start:c.End])
		}
	}
	return out, nil
}

// pmFind is pm's first match, or ok false when pm refuses the pattern
// (or fails on it).
func pmFind(s, p string, init int) (out string, ok bool) {
	defer func() {
		if recover() != nil { // pm panics on some malformed patterns
			ok = false
		}
	}()
	mds, err := pm.Find(p, []byte(s), init, 1)
	if err != nil {
		return "", false
	}
	if len(mds) == 0 {
		return "nil", true
	}
	md := mds[0]
	out = fmt.Sprintf("%d-%d", md.Capture(0), md.Capture(1))
	for i := 2; i < md.CaptureLength(); i += 2 {
		if md.IsPosCapture(i) {
			out += fmt.Sprintf(" @%d", md.Capture(i)-1)
		} else {
			out += fmt.Sprintf(" %q", s[md.Capture(i):md.Capture(i+1)])
		}
	}
	return out, true
}

// pmDiverges reports whether p uses a construct pm reads differently
// from the reference (see FuzzFind).
func pmDiverges(p string) bool {
	if strings.Contains(p, "%f") || strings.Contains(p, "()") && strings.ContainsAny(p, "123456789") {
		return true
	}
	// A '-' next to an escape inside a set, or a second '-' in a set
	// ("[0-0-0]": the reference reads the range 0-0, then '-' and '0'
	// as literals; pm does not).
	in := false
	dashes := 0
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case !in && c == '%':
			i++
		case !in && c == '[':
			in, dashes = true, 0
			if i+1 < len(p) && p[i+1] == '^' {
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' {
				i++
			}
		case in && c == '%':
			if i+2 < len(p) && p[i+2] == '-' || i > 0 && p[i-1] == '-' {
				return true
			}
			i++
		case in && c == ']':
			in = false
		case in && c == '-':
			if dashes++; dashes >= 2 {
				return true
			}
		}
	}
	return false
}

// TestAgainstPM is FuzzFind's comparison on patterns built from Lua's
// pattern items, which byte-level mutation reaches only slowly; it also
// makes sure that most of them are compared rather than skipped.
func TestAgainstPM(t *testing.T) {
	items := []string{"a", "b", "x", " ", ".", "%a", "%s", "%d", "%w", "%S", "%p", "[ab]", "[^a ]", "[a-c]", "%.", "%%",
		"*", "+", "-", "?", "(", ")", "()", "^", "$", "%b()", "%1", "[%s%d]", "[]]", "[a-]"}
	subjects := []string{"", "a", "ab ab", "aab(b)x", "  xa  ", "ba%ab.", "(a(b)c)", "aaaa", "12 ab-c", "x)(x"}
	r := uint64(1)
	next := func(n int) int { // xorshift: deterministic, no rand state to seed
		r ^= r << 13
		r ^= r >> 7
		r ^= r << 17
		return int(r % uint64(n))
	}
	compared := 0
	const runs = 20000
	for range runs {
		var b strings.Builder
		for range 1 + next(7) {
			b.WriteString(items[next(len(items))])
		}
		p, s := b.String(), subjects[next(len(subjects))]
		init := next(len(s) + 1)
		if strings.Count(p, "*")+strings.Count(p, "+")+strings.Count(p, "-")+strings.Count(p, "?") > 3 || pmDiverges(p) {
			continue
		}
		want, ok := pmFind(s, p, init)
		if !ok {
			continue
		}
		got, err := find(s, p, init)
		if err != nil {
			continue
		}
		compared++
		if got != want {
			t.Errorf("find(%q, %q, %d) = %s, pm says %s", s, p, init, got, want)
		}
	}
	if compared < runs/4 {
		t.Errorf("only %d of %d cases compared", compared, runs)
	}
	t.Logf("%d of %d cases compared", compared, runs)
}
