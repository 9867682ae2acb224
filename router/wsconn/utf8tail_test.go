package wsconn

import (
	"math/rand/v2"
	"sync"
	"testing"
	"unicode/utf8"
)

// runePrefixes holds every proper prefix (1 to 3 bytes) of the UTF-8
// encoding of every valid code point: the oracle for "could still become
// valid", built independently of utf8.FullRune, which utf8Tail relies on.
var runePrefixes = sync.OnceValue(func() map[string]bool {
	m := make(map[string]bool, 70000)
	var buf [utf8.UTFMax]byte
	for r := rune(0x80); r <= utf8.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		n := utf8.EncodeRune(buf[:], r)
		for k := 1; k < n; k++ {
			m[string(buf[:k])] = true
		}
	}
	return m
})

// firstBad returns the index of the first byte of b after which no
// continuation can make b valid UTF-8, or -1 when every prefix of b can
// still be completed (b is valid, or valid but for a truncated last rune).
func firstBad(b []byte) int {
	prefixes := runePrefixes()
	pos := 0
	for pos < len(b) {
		if r, size := utf8.DecodeRune(b[pos:]); r != utf8.RuneError || size > 1 {
			pos += size
			continue
		}
		l := 0
		for k := 1; k <= 3 && pos+k <= len(b); k++ {
			if prefixes[string(b[pos:pos+k])] {
				l = k
			} else {
				break
			}
		}
		if l > 0 && pos+l == len(b) {
			return -1 // a truncated but so far valid last rune
		}
		return pos + l
	}
	return -1
}

// utf8Atoms are the pieces random test strings are made of.
var utf8Atoms = []string{
	"a", "Z", " ", "\x00", "\x7f",
	"é", "ß", "\u07ff", // 2 bytes
	"世", "\u0800", "\uffff", "\ufffd", "\ud7ff", "\xee\x80\x80", // 3 bytes (around the surrogates)
	"😀", "\U00010000", "\U0010ffff", // 4 bytes
	"\xed\xa0\x80", "\xed\xbf\xbf", "\xed\xa0", // surrogates
	"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", // overlongs
	"\xf4\x90\x80\x80", "\xf5", "\xf8\x88\x80\x80\x80", "\xfe", "\xff", // out of range
	"\x80", "\xbf", "\x80\x80", // stray continuations
	"\xe4\xb8", "\xf0\x9f\x98", "\xf0\x9f", "\xc3", "\xe4", "\xf4\x8f", // truncated sequences
}

func randomUTF8ish(rng *rand.Rand) []byte {
	var b []byte
	n := rng.IntN(24)
	mostlyValid := rng.IntN(3) == 0
	for range n {
		i := rng.IntN(len(utf8Atoms))
		if mostlyValid && rng.IntN(8) != 0 {
			i = rng.IntN(17) // the 17 valid atoms come first
		}
		b = append(b, utf8Atoms[i]...)
	}
	if rng.IntN(10) == 0 && len(b) > 0 {
		b[rng.IntN(len(b))] = byte(rng.Uint32())
	}
	return b
}

// randomSplit cuts b into pieces at random points, empty pieces included.
func randomSplit(rng *rand.Rand, b []byte) [][]byte {
	var pieces [][]byte
	for len(b) > 0 || rng.IntN(4) == 0 {
		k := 0
		if len(b) > 0 {
			k = rng.IntN(min(len(b), 6) + 1)
		}
		pieces = append(pieces, b[:k])
		b = b[k:]
		if len(b) == 0 && rng.IntN(2) == 0 {
			break
		}
	}
	return pieces
}

// checkTail feeds pieces to a fresh utf8Tail and checks it against the
// oracle: the verdict equals utf8.Valid(whole), and feed reports false
// exactly on the piece holding the first byte that makes the text
// undecidably invalid (not earlier, not later).
func checkTail(t *testing.T, pieces [][]byte) {
	t.Helper()
	var whole []byte
	for _, p := range pieces {
		whole = append(whole, p...)
	}
	bad := firstBad(whole)
	if (bad < 0) != (utf8.Valid(whole) || !utf8.Valid(whole) && firstBadTruncated(whole)) {
		t.Fatalf("oracle disagrees with itself on %q", whole)
	}
	var u utf8Tail
	off := 0
	for i, p := range pieces {
		// Feed a copy so that the tail cannot alias the caller's bytes.
		ok := u.feed(append([]byte(nil), p...))
		end := off + len(p)
		holdsBad := bad >= off && bad < end
		if ok == holdsBad {
			t.Fatalf("%q split %q: piece %d (bytes [%d,%d)) feed = %v, first undecidable byte at %d",
				whole, pieces, i, off, end, ok, bad)
		}
		if !ok {
			return
		}
		off = end
	}
	if got, want := u.complete(), utf8.Valid(whole); got != want {
		t.Fatalf("%q split %q: complete() = %v, utf8.Valid = %v", whole, pieces, got, want)
	}
}

// firstBadTruncated reports whether b is invalid only because its last
// rune is cut short.
func firstBadTruncated(b []byte) bool {
	for k := 1; k <= 3 && k <= len(b); k++ {
		if utf8.Valid(b[:len(b)-k]) && runePrefixes()[string(b[len(b)-k:])] {
			return true
		}
	}
	return false
}

func TestUTF8TailProperty(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		b := randomUTF8ish(rng)
		checkTail(t, randomSplit(rng, b))
		// The byte-at-a-time split is the hardest for the carried state.
		var bytewise [][]byte
		for i := range b {
			bytewise = append(bytewise, b[i:i+1])
		}
		checkTail(t, bytewise)
	}
}

func TestUTF8TailCases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pieces []string
	}{
		{"empty", nil},
		{"empty pieces", []string{"", "", ""}},
		{"ascii", []string{"hello", " ", "world"}},
		{"rune split 1+1", []string{"\xc3", "\xa9"}},
		{"rune split 1+2", []string{"\xe4", "\xb8\x96"}},
		{"rune split 2+1", []string{"\xe4\xb8", "\x96"}},
		{"rune split 1+1+1+1", []string{"\xf0", "\x9f", "\x98", "\x80"}},
		{"rune split with empties", []string{"\xf0", "", "\x9f\x98", "", "\x80tail"}},
		{"max rune split", []string{"\xf4\x8f", "\xbf\xbf"}},
		{"U+FFFD split", []string{"\xef\xbf", "\xbd"}},
		{"truncated at end", []string{"ab", "\xe4\xb8"}},
		{"0xFF alone", []string{"ok", "\xff", "ok"}},
		{"0xFF after pending", []string{"\xe4", "\xff"}},
		{"ascii after pending", []string{"\xe4\xb8", "a"}},
		{"surrogate split", []string{"\xed", "\xa0\x80"}},
		{"surrogate whole", []string{"a\xed\xa0\x80"}},
		{"last allowed before surrogates", []string{"\xed", "\x9f\xbf"}},
		{"overlong 2", []string{"\xc0", "\x80"}},
		{"overlong 3 split", []string{"\xe0", "\x9f", "\xbf"}},
		{"above max split", []string{"\xf4", "\x90\x80\x80"}},
		{"F5 lead", []string{"\xf5\x80\x80\x80"}},
		{"stray continuation", []string{"a", "\x80"}},
		{"too many continuations", []string{"\xc3\xa9", "\xa9"}},
		{"bad byte in middle of valid piece", []string{"\xe4", "\xb8\x96ab\xffcd"}},
		{"bad 4th byte", []string{"\xf0\x9f\x98", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pieces := make([][]byte, len(tc.pieces))
			for i, p := range tc.pieces {
				pieces[i] = []byte(p)
			}
			checkTail(t, pieces)
		})
	}
}

// TestUTF8TailOracle pins the oracle itself on a few inputs.
func TestUTF8TailOracle(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]int{
		"":                 -1,
		"abc":              -1,
		"ab\xe4\xb8":       -1,
		"ab\xe4\xb8c":      4,
		"\xff":             0,
		"a\xed\xa0\x80":    2,
		"\xc0\x80":         0,
		"\xe0\x80":         1,
		"\xf4\x90":         1,
		"\xf0\x9f\x98\x80": -1,
		"\x80":             0,
	} {
		if got := firstBad([]byte(s)); got != want {
			t.Errorf("firstBad(%q) = %d, want %d", s, got, want)
		}
	}
}
