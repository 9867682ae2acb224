package conformance

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// 6.x UTF-8 handling.

// utf8Seq is one entry of Autobahn's UTF-8 table: a payload and whether it
// is valid UTF-8 (Autobahn's verdict, not Go's: the two are checked to
// agree in TestUTF8Table).
type utf8Seq struct {
	valid   bool
	payload string
}

// utf8Family is one subcategory of cases 6.5-6.23.
type utf8Family struct {
	name string
	seqs []utf8Seq
}

// kosme is "κόσμε", the Greek word of Markus Kuhn's UTF-8 test file.
const kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

// utf8Families reproduces createUtf8TestSequences() of Autobahn's
// case6_x_x.py, entry for entry and in order; the families become cases
// 6.5 to 6.23 (family i is 6.(i+5), its entry j is 6.(i+5).(j+1)).
func utf8Families() []utf8Family {
	valid := func(ps ...string) []utf8Seq {
		var s []utf8Seq
		for _, p := range ps {
			s = append(s, utf8Seq{true, p})
		}
		return s
	}
	invalid := func(ps ...string) []utf8Seq {
		var s []utf8Seq
		for _, p := range ps {
			s = append(s, utf8Seq{false, p})
		}
		return s
	}
	var fs []utf8Family
	add := func(name string, seqs ...[]utf8Seq) {
		var all []utf8Seq
		for _, s := range seqs {
			all = append(all, s...)
		}
		fs = append(fs, utf8Family{name, all})
	}

	// 1 Some correct UTF-8 text.
	add("Some valid UTF-8 sequences", valid("hello\x24world", "hello\xc2\xa2world", "hello\xe2\x82\xacworld", "hello\xf0\xa4\xad\xa2world", kosme))
	// All prefixes of kosme: valid where they end on a code point boundary.
	var prefixes []utf8Seq
	for i := 1; i <= len(kosme); i++ {
		prefixes = append(prefixes, utf8Seq{kosmePrefixValid[i], kosme[:i]})
	}
	add("All prefixes of a valid UTF-8 string that contains multi-byte code points", prefixes)
	// 2.1 First possible sequence of a certain length.
	add("First possible sequence of a certain length", valid("\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80"))
	add("First possible sequence length 5/6 (invalid codepoints)", invalid("\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80"))
	// 2.2 Last possible sequence of a certain length.
	add("Last possible sequence of a certain length", valid("\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"))
	add("Last possible sequence length 4/5/6 (invalid codepoints)", invalid("\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf"))
	// 2.3 Other boundary conditions.
	add("Other boundary conditions", valid("\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"), invalid("\xf4\x90\x80\x80"))
	// 3.1 Unexpected continuation bytes; the last entry is 0x80-0xbe
	// (Python's xrange(0x80, 0xbf) stops before 0xbf).
	var conts strings.Builder
	for c := 0x80; c < 0xbf; c++ {
		conts.WriteByte(byte(c))
	}
	add("Unexpected continuation bytes", invalid("\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80", "\x80\xbf\x80\xbf",
		"\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", conts.String()))
	// 3.2 Lonely start characters, each followed by a space (again with
	// Python's exclusive upper bounds).
	var lonely []string
	for _, r := range [][2]int{{0xc0, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf7}, {0xf8, 0xfb}, {0xfc, 0xfd}} {
		var b strings.Builder
		for c := r[0]; c < r[1]; c++ {
			b.WriteByte(byte(c))
			b.WriteByte(0x20)
		}
		lonely = append(lonely, b.String())
	}
	add("Lonely start characters", invalid(lonely...))
	// 3.3 Sequences with last continuation byte missing; 3.4 all of them
	// concatenated.
	missing := []string{"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf"}
	add("Sequences with last continuation byte missing", invalid(missing...))
	add("Concatenation of incomplete sequences", invalid(strings.Join(missing, "")))
	// 3.5 Impossible bytes.
	add("Impossible bytes", invalid("\xfe", "\xff", "\xfe\xfe\xff\xff"))
	// 4.1-4.3 Overlong sequences.
	add("Examples of an overlong ASCII character", invalid("\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf"))
	add("Maximum overlong sequences", invalid("\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf"))
	add("Overlong representation of the NUL character", invalid("\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80"))
	// 5.1, 5.2 UTF-16 surrogates.
	add("Single UTF-16 surrogates", invalid("\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf"))
	add("Paired UTF-16 surrogates", invalid("\xed\xa0\x80\xed\xb0\x80", "\xed\xa0\x80\xed\xbf\xbf", "\xed\xad\xbf\xed\xb0\x80", "\xed\xad\xbf\xed\xbf\xbf",
		"\xed\xae\x80\xed\xb0\x80", "\xed\xae\x80\xed\xbf\xbf", "\xed\xaf\xbf\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf"))
	// 5.3 Non-characters: valid UTF-8 (RFC 3629).
	nonChars := []string{"\xef\xbf\xbe", "\xef\xbf\xbf"}
	for _, z1 := range []string{"\xf0", "\xf1", "\xf2", "\xf3", "\xf4"} {
		for _, z2 := range []string{"\x8f", "\x9f", "\xaf", "\xbf"} {
			if z1 == "\xf4" && z2 != "\x8f" {
				continue // beyond U+10FFFF
			}
			for _, z3 := range []string{"\xbe", "\xbf"} {
				zz := z1 + z2 + "\xbf" + z3
				if zz != "\xf0\x8f\xbf\xbe" && zz != "\xf0\x8f\xbf\xbf" { // overlong
					nonChars = append(nonChars, zz)
				}
			}
		}
	}
	add("Non-character code points (valid UTF-8)", valid(nonChars...))
	// Unicode specials.
	add("Unicode specials (i.e. replacement char)", valid("\xef\xbf\xb9", "\xef\xbf\xba", "\xef\xbf\xbb", "\xef\xbf\xbc", "\xef\xbf\xbd", "\xef\xbf\xbe", "\xef\xbf\xbf"))
	return fs
}

// kosmePrefixValid[i] is Autobahn's verdict on kosme[:i] (its incremental
// validator: valid so far and ending on a code point boundary). κόσμε is
// ce ba | e1 bd b9 | cf 83 | ce bc | ce b5.
var kosmePrefixValid = map[int]bool{2: true, 5: true, 7: true, 9: true, 11: true}

func utf8Cases() []Case {
	cs := []Case{
		// 6.1 Valid UTF-8 with zero payload fragments.
		{ID: "6.1.1", RFC: rfcUTF8, Desc: "text message of length 0",
			Steps: []step{send(textFrame(""))}, Outcomes: ok(message("")), Close: normalClose},
		{ID: "6.1.2", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "text message in 3 fragments of length 0",
			Steps:    []step{send(fragment(opText, false, ""), fragment(opCont, false, ""), fragment(opCont, true, ""))},
			Outcomes: ok(message("")), Close: normalClose},
		{ID: "6.1.3", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "text message in 3 fragments, first and last of length 0",
			Steps:    []step{send(fragment(opText, false, ""), fragment(opCont, false, "middle frame payload"), fragment(opCont, true, ""))},
			Outcomes: ok(message("middle frame payload")), Close: normalClose},
	}

	// 6.2 Valid UTF-8: unfragmented, fragmented on and within code points.
	const hello = "Hello-µ@ßöäüàá-UTF-8!!"
	cs = append(cs,
		Case{ID: "6.2.1", RFC: rfcUTF8, Desc: "valid UTF-8 text message in one fragment",
			Steps: []step{send(textFrame(hello))}, Outcomes: ok(message(hello)), Close: normalClose},
		Case{ID: "6.2.2", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "valid UTF-8 text message in 2 fragments, split on a code point boundary",
			Steps:    []step{send(fragment(opText, false, "Hello-µ@ßöä"), fragment(opCont, true, "üàá-UTF-8!!"))},
			Outcomes: ok(message(hello)), Close: normalClose},
		Case{ID: "6.2.3", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "valid UTF-8 text message in fragments of 1 octet (split within code points)",
			Steps:    []step{send(fragmentMessage(opText, []byte(hello), 1)...)},
			Outcomes: ok(message(hello)), Close: normalClose},
		Case{ID: "6.2.4", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "κόσμε in fragments of 1 octet (split within code points)",
			Steps:    []step{send(fragmentMessage(opText, []byte(kosme), 1)...)},
			Outcomes: ok(message(kosme)), Close: normalClose},
	)

	// 6.3 Invalid UTF-8 (a surrogate, invalid at octet 12), differently
	// fragmented.
	const invalid = kosme + "\xed\xa0\x80" + "edited"
	cs = append(cs,
		Case{ID: "6.3.1", RFC: rfcUTF8, Desc: "invalid UTF-8 text message, unfragmented",
			Steps: []step{send(textFrame(invalid))}, Outcomes: ok(), Close: failedWith(1007)},
		Case{ID: "6.3.2", RFC: rfcUTF8 + "; " + rfcFragment, Desc: "invalid UTF-8 text message in fragments of 1 octet",
			Steps: []step{send(fragmentMessage(opText, []byte(invalid), 1)...)}, Outcomes: ok(), Close: failedWith(1007)},
	)

	// 6.4 Fail fast on invalid UTF-8: the valid first part must not fail
	// (timeout A); the part that makes the text invalid should fail at once
	// (OK); failing only once the message or frame is complete (timeout B)
	// is NON-STRICT. The payload is κόσμε, then U+110000 encoded as UTF-8
	// (f4 90 80 80: invalid at its second octet, the 12th), then "edited".
	const p1, p2, p3 = kosme, "\xf4\x90\x80\x80", "edited"
	const full = p1 + p2 + p3
	failFast := []outcome{
		{gradeOK, []event{timeout("A")}},
		{gradeNonStrict, []event{timeout("A"), timeout("B")}},
	}
	inFrames := func(a, b, c string) []step {
		return []step{
			send(fragment(opText, false, a)), pause("A", quietWindow),
			send(fragment(opCont, false, b)), pause("B", failFastWindow),
			send(fragment(opCont, true, c)),
		}
	}
	inChops := func(cut1, cut2 int) []step {
		parts := splitFrame(textFrame(full), cut1, cut2)
		return []step{
			sendRaw(fmt.Sprintf("header and octets 0-%d of a %d-octet text frame", cut1-1, len(full)), parts[0], false), pause("A", quietWindow),
			sendRaw(fmt.Sprintf("octets %d-%d", cut1, cut2-1), parts[1], false), pause("B", failFastWindow),
			sendRaw(fmt.Sprintf("octets %d-%d", cut2, len(full)-1), parts[2], true),
		}
	}
	cs = append(cs,
		Case{ID: "6.4.1", RFC: rfcUTF8 + " (fail fast)", Desc: "3 fragments: κόσμε, then f4 90 80 80 (invalid), then \"edited\", pausing in between",
			Steps: inFrames(p1, p2, p3), Outcomes: failFast, Close: failedWith(1007)},
		Case{ID: "6.4.2", RFC: rfcUTF8 + " (fail fast)", Desc: "3 fragments: κόσμε f4, then 90 (the invalid octet), then the rest, pausing in between",
			Steps: inFrames(full[:12], full[12:13], full[13:]), Outcomes: failFast, Close: failedWith(1007)},
		Case{ID: "6.4.3", RFC: rfcUTF8 + " (fail fast)", Desc: "one frame in 3 chops: κόσμε, then f4 90 80 80 (invalid), then \"edited\", pausing in between",
			Steps: inChops(len(p1), len(p1)+len(p2)), Outcomes: failFast, Close: failedWith(1007)},
		Case{ID: "6.4.4", RFC: rfcUTF8 + " (fail fast)", Desc: "one frame in 3 chops: κόσμε f4, then 90 (the invalid octet), then the rest, pausing in between",
			Steps: inChops(12, 13), Outcomes: failFast, Close: failedWith(1007)},
	)

	// 6.5-6.23: Autobahn's UTF-8 table, one unfragmented text message each.
	for i, fam := range utf8Families() {
		for j, seq := range fam.seqs {
			c := Case{
				ID:    fmt.Sprintf("6.%d.%d", i+5, j+1),
				RFC:   rfcUTF8,
				Steps: []step{send(textFrame(seq.payload))},
			}
			if seq.valid {
				c.Desc = fmt.Sprintf("%s: valid %x, echoed", fam.name, seq.payload)
				c.Outcomes, c.Close = ok(message(seq.payload)), normalClose
			} else {
				c.Desc = fmt.Sprintf("%s: invalid %x, fail with 1007", fam.name, seq.payload)
				c.Outcomes, c.Close = ok(), failedWith(1007)
			}
			cs = append(cs, c)
		}
	}
	return cs
}

// utf8Agrees reports whether Go's validator agrees with Autobahn's verdict.
func (s utf8Seq) utf8Agrees() bool { return utf8.ValidString(s.payload) == s.valid }
