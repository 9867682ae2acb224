package conformance

import (
	"bytes"
	"fmt"
	"strings"
)

// The case tables. Each case reproduces the traffic and the expectation of
// the Autobahn|Testsuite case of the same number (autobahntestsuite/case/
// caseX_Y_Z.py): same payloads, same splits, same accepted outcomes. Where
// Autobahn pauses for a fixed time to let a reply arrive, the client waits
// for that reply instead.

// allCases returns every case, in Autobahn's order.
func allCases() []Case {
	var cs []Case
	cs = append(cs, framingCases()...)
	cs = append(cs, pingPongCases()...)
	cs = append(cs, reservedBitsCases()...)
	cs = append(cs, opcodeCases()...)
	cs = append(cs, fragmentationCases()...)
	cs = append(cs, utf8Cases()...)
	cs = append(cs, closeCases()...)
	cs = append(cs, limitsCases()...)
	cs = append(cs, autoFragmentationCases()...)
	cs = append(cs, compressionCases()...)
	return cs
}

const (
	rfcFraming  = "RFC 6455 §5.2 (payload length), §5.6"
	rfcPing     = "RFC 6455 §5.5.2, §5.5.3"
	rfcControl  = "RFC 6455 §5.5 (control frames ≤ 125 octets)"
	rfcRSV      = "RFC 6455 §5.2 (RSV1-3 must be 0 without an extension)"
	rfcOpcode   = "RFC 6455 §5.2 (reserved opcodes)"
	rfcFragment = "RFC 6455 §5.4"
	rfcUTF8     = "RFC 6455 §8.1, §5.6; RFC 3629"
	rfcClose    = "RFC 6455 §5.5.1, §7.1"
	rfcCloseFmt = "RFC 6455 §5.5.1 (close body), §5.5"
	rfcCodes    = "RFC 6455 §7.4"
	rfcLimits   = "RFC 6455 §5.2, §5.4 (limits and performance)"
)

// 1.x Framing: text and binary messages of every payload length encoding.
func framingCases() []Case {
	var cs []Case
	sizes := []int{0, 125, 126, 127, 128, 65535, 65536}
	for _, k := range []struct {
		sub  int
		op   byte
		fill string
	}{{1, opText, "*"}, {2, opBinary, "\xfe"}} {
		kind := map[byte]string{opText: "text", opBinary: "binary"}[k.op]
		want := func(p []byte) event {
			if k.op == opBinary {
				return binaryMessage(p)
			}
			return messageBytes(p)
		}
		for i, n := range sizes {
			p := bytes.Repeat([]byte(k.fill), n)
			cs = append(cs, Case{
				ID: fmt.Sprintf("1.%d.%d", k.sub, i+1), RFC: rfcFraming,
				Desc:     fmt.Sprintf("%s message with a payload of %d octets", kind, n),
				Steps:    []step{send(frame{op: k.op, fin: true, payload: p})},
				Outcomes: ok(want(p)), Close: normalClose,
			})
		}
		p := bytes.Repeat([]byte(k.fill), 65536)
		cs = append(cs, Case{
			ID: fmt.Sprintf("1.%d.8", k.sub), RFC: rfcFraming + "; TCP-agnostic",
			Desc:     kind + " message of 65536 octets, written in chops of 997 octets",
			Steps:    []step{sendChops(997, frame{op: k.op, fin: true, payload: p})},
			Outcomes: ok(want(p)), Close: normalClose,
		})
	}
	return cs
}

// 2.x Pings/Pongs.
func pingPongCases() []Case {
	fe125 := strings.Repeat("\xfe", 125)
	cs := []Case{
		{ID: "2.1", RFC: rfcPing, Desc: "ping without payload",
			Steps: []step{send(pingFrame(""))}, Outcomes: ok(pong("")), Close: normalClose},
		{ID: "2.2", RFC: rfcPing, Desc: "ping with a small text payload",
			Steps: []step{send(pingFrame("Hello, world!"))}, Outcomes: ok(pong("Hello, world!")), Close: normalClose},
		{ID: "2.3", RFC: rfcPing, Desc: "ping with a small binary (non UTF-8) payload",
			Steps:    []step{send(pingFrame("\x00\xff\xfe\xfd\xfc\xfb\x00\xff"))},
			Outcomes: ok(pong("\x00\xff\xfe\xfd\xfc\xfb\x00\xff")), Close: normalClose},
		{ID: "2.4", RFC: rfcPing, Desc: "ping with a binary payload of 125 octets",
			Steps: []step{send(pingFrame(fe125))}, Outcomes: ok(pong(fe125)), Close: normalClose},
		{ID: "2.5", RFC: rfcControl, Desc: "ping with a binary payload of 126 octets: fail with 1002",
			Steps:    []step{send(pingFrame(strings.Repeat("\xfe", 126)))},
			Outcomes: ok(), Close: failedWith(1002)},
		{ID: "2.6", RFC: rfcPing + "; TCP-agnostic", Desc: "ping with a payload of 125 octets, written octet by octet",
			Steps: []step{sendChops(1, pingFrame(fe125))}, Outcomes: ok(pong(fe125)), Close: normalClose},
		{ID: "2.7", RFC: rfcPing, Desc: "unsolicited pong without payload, then close: nothing comes back",
			Steps:    []step{send(pongFrame(""), closeFrame(closeBody(1000, "")))},
			Outcomes: ok(), Close: normalClose},
		{ID: "2.8", RFC: rfcPing, Desc: "unsolicited pong with payload, then close: nothing comes back",
			Steps:    []step{send(pongFrame("unsolicited pong payload"), closeFrame(closeBody(1000, "")))},
			Outcomes: ok(), Close: normalClose},
		{ID: "2.9", RFC: rfcPing, Desc: "unsolicited pong, then ping: only the ping is answered",
			Steps:    []step{send(pongFrame("unsolicited pong payload"), pingFrame("ping payload"))},
			Outcomes: ok(pong("ping payload")), Close: normalClose},
	}
	// 2.10, 2.11: ten pings, each answered with its payload.
	var pings []frame
	var pongs []event
	for i := range 10 {
		p := fmt.Sprintf("payload-%d", i)
		pings = append(pings, pingFrame(p))
		pongs = append(pongs, pong(p))
	}
	cs = append(cs,
		Case{ID: "2.10", RFC: rfcPing, Desc: "10 pings with payload",
			Steps: []step{send(pings...)}, Outcomes: ok(pongs...), Close: normalClose},
		Case{ID: "2.11", RFC: rfcPing + "; TCP-agnostic", Desc: "10 pings with payload, written octet by octet",
			Steps: []step{sendChops(1, pings...)}, Outcomes: ok(pongs...), Close: normalClose},
	)
	return cs
}

// 3.x Reserved bits.
func reservedBitsCases() []Case {
	hello := textFrame("Hello, world!")
	return []Case{
		{ID: "3.1", RFC: rfcRSV, Desc: "small text message with RSV = 1",
			Steps: []step{send(hello.withRSV(1))}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "3.2", RFC: rfcRSV, Desc: "text message, then the same with RSV = 2, then ping",
			Steps:    []step{send(hello, hello.withRSV(2), pingFrame(""))},
			Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
		{ID: "3.3", RFC: rfcRSV, Desc: "text message, then the same with RSV = 3, then ping, frame-wise",
			Steps:    []step{sendSync(hello, hello.withRSV(3), pingFrame(""))},
			Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
		{ID: "3.4", RFC: rfcRSV, Desc: "text message, then the same with RSV = 4, then ping, octet-wise",
			Steps:    []step{sendChops(1, hello, hello.withRSV(4), pingFrame(""))},
			Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
		{ID: "3.5", RFC: rfcRSV, Desc: "small binary message with RSV = 5",
			Steps:    []step{send(binaryFrame([]byte("\x00\xff\xfe\xfd\xfc\xfb\x00\xff")).withRSV(5))},
			Outcomes: ok(), Close: failedWith(1002)},
		// Autobahn's description says "Ping", but the case sends opcode 2.
		{ID: "3.6", RFC: rfcRSV, Desc: "binary frame \"Hello, world!\" with RSV = 6",
			Steps: []step{send(opFrame(opBinary, "Hello, world!").withRSV(6))}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "3.7", RFC: rfcRSV, Desc: "close frame with RSV = 7",
			Steps: []step{send(opFrame(opClose, "").withRSV(7))}, Outcomes: ok(), Close: failedWith(1002)},
	}
}

// 4.x Opcodes.
func opcodeCases() []Case {
	hello := textFrame("Hello, world!")
	reserved := "reserved opcode payload"
	var cs []Case
	for _, k := range []struct {
		sub  int
		ops  [5]byte
		kind string
	}{{1, [5]byte{3, 4, 5, 6, 7}, "non-control"}, {2, [5]byte{11, 12, 13, 14, 15}, "control"}} {
		o := k.ops
		id := func(n int) string { return fmt.Sprintf("4.%d.%d", k.sub, n) }
		cs = append(cs,
			Case{ID: id(1), RFC: rfcOpcode, Desc: fmt.Sprintf("frame with reserved %s opcode %d", k.kind, o[0]),
				Steps: []step{send(opFrame(o[0], ""))}, Outcomes: ok(), Close: failedWith(1002)},
			Case{ID: id(2), RFC: rfcOpcode, Desc: fmt.Sprintf("frame with reserved %s opcode %d and a payload", k.kind, o[1]),
				Steps: []step{send(opFrame(o[1], reserved))}, Outcomes: ok(), Close: failedWith(1002)},
			Case{ID: id(3), RFC: rfcOpcode, Desc: fmt.Sprintf("text message, then reserved %s opcode %d, then ping", k.kind, o[2]),
				Steps:    []step{send(hello, opFrame(o[2], ""), pingFrame(""))},
				Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
			Case{ID: id(4), RFC: rfcOpcode, Desc: fmt.Sprintf("text message, then reserved %s opcode %d with a payload, then ping", k.kind, o[3]),
				Steps:    []step{send(hello, opFrame(o[3], "Hello, world!"), pingFrame(""))},
				Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
			Case{ID: id(5), RFC: rfcOpcode, Desc: fmt.Sprintf("text message, then reserved %s opcode %d with a payload, then ping, octet-wise", k.kind, o[4]),
				Steps:    []step{sendChops(1, hello, opFrame(o[4], "Hello, world!"), pingFrame(""))},
				Outcomes: okOrNonStrict(message("Hello, world!")), Close: failedWith(1002)},
		)
	}
	return cs
}

// 5.x Fragmentation.
func fragmentationCases() []Case {
	f1, f2 := fragment(opText, false, "fragment1"), fragment(opCont, true, "fragment2")
	ping := pingFrame("ping payload")
	orphanFin := fragment(opCont, true, "non-continuation payload")
	orphan := fragment(opCont, false, "non-continuation payload")
	hello := textFrame("Hello, world!")
	both := message("fragment1fragment2")

	var repeated16, repeated17 []frame
	for range 2 {
		repeated16 = append(repeated16, fragment(opCont, false, "fragment1"), fragment(opText, false, "fragment2"), fragment(opCont, true, "fragment3"))
		repeated17 = append(repeated17, fragment(opCont, true, "fragment1"), fragment(opText, false, "fragment2"), fragment(opCont, true, "fragment3"))
	}
	cs := []Case{
		{ID: "5.1", RFC: rfcFragment + " (control frames must not be fragmented)", Desc: "ping in 2 fragments",
			Steps:    []step{send(fragment(opPing, false, "fragment1"), fragment(opCont, true, "fragment2"))},
			Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.2", RFC: rfcFragment + " (control frames must not be fragmented)", Desc: "pong in 2 fragments",
			Steps:    []step{send(fragment(opPong, false, "fragment1"), fragment(opCont, true, "fragment2"))},
			Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.3", RFC: rfcFragment, Desc: "text message in 2 fragments",
			Steps: []step{send(f1, f2)}, Outcomes: ok(both), Close: normalClose},
		{ID: "5.4", RFC: rfcFragment, Desc: "text message in 2 fragments, frame-wise",
			Steps: []step{sendSync(f1, f2)}, Outcomes: ok(both), Close: normalClose},
		{ID: "5.5", RFC: rfcFragment, Desc: "text message in 2 fragments, octet-wise",
			Steps: []step{sendChops(1, f1, f2)}, Outcomes: ok(both), Close: normalClose},
		{ID: "5.6", RFC: rfcFragment + " (control frames in between)", Desc: "text message in 2 fragments, a ping in between",
			Steps: []step{send(f1, ping, f2)}, Outcomes: ok(pong("ping payload"), both), Close: normalClose},
		{ID: "5.7", RFC: rfcFragment + " (control frames in between)", Desc: "text message in 2 fragments, a ping in between, frame-wise",
			Steps: []step{sendSync(f1, ping, f2)}, Outcomes: ok(pong("ping payload"), both), Close: normalClose},
		{ID: "5.8", RFC: rfcFragment + " (control frames in between)", Desc: "text message in 2 fragments, a ping in between, octet-wise",
			Steps: []step{sendChops(1, f1, ping, f2)}, Outcomes: ok(pong("ping payload"), both), Close: normalClose},
		{ID: "5.9", RFC: rfcFragment, Desc: "continuation (FIN=1) with nothing to continue, then a text message",
			Steps: []step{send(orphanFin, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.10", RFC: rfcFragment, Desc: "continuation (FIN=1) with nothing to continue, then a text message, frame-wise",
			Steps: []step{sendSync(orphanFin, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.11", RFC: rfcFragment, Desc: "continuation (FIN=1) with nothing to continue, then a text message, octet-wise",
			Steps: []step{sendChops(1, orphanFin, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.12", RFC: rfcFragment, Desc: "continuation (FIN=0) with nothing to continue, then a text message",
			Steps: []step{send(orphan, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.13", RFC: rfcFragment, Desc: "continuation (FIN=0) with nothing to continue, then a text message, frame-wise",
			Steps: []step{sendSync(orphan, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.14", RFC: rfcFragment, Desc: "continuation (FIN=0) with nothing to continue, then a text message, octet-wise",
			Steps: []step{sendChops(1, orphan, hello)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.15", RFC: rfcFragment, Desc: "text message in 2 fragments, then a continuation (FIN=0) with nothing to continue, then a text message",
			Steps:    []step{send(f1, f2, fragment(opCont, false, "fragment3"), fragment(opText, true, "fragment4"))},
			Outcomes: okOrNonStrict(both), Close: failedWith(1002)},
		{ID: "5.16", RFC: rfcFragment, Desc: "twice: continuation (FIN=0) with nothing to continue, then a text message in 2 fragments",
			Steps: []step{send(repeated16...)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.17", RFC: rfcFragment, Desc: "twice: continuation (FIN=1) with nothing to continue, then a text message in 2 fragments",
			Steps: []step{send(repeated17...)}, Outcomes: ok(), Close: failedWith(1002)},
		{ID: "5.18", RFC: rfcFragment, Desc: "text message in 2 fragments, both with the text opcode",
			Steps:    []step{send(f1, fragment(opText, true, "fragment2"))},
			Outcomes: ok(), Close: failedWith(1002)},
	}
	// 5.19, 5.20: a ping in the middle of a fragmented message is answered
	// before the message is complete. Autobahn pauses 1 s after the first
	// ping; the client waits for its pong instead.
	for _, k := range []struct {
		id   string
		sync bool
	}{{"5.19", false}, {"5.20", true}} {
		part1 := []frame{fragment(opText, false, "fragment1"), fragment(opCont, false, "fragment2"), pingFrame("pongme 1!")}
		part2 := []frame{fragment(opCont, false, "fragment3"), fragment(opCont, false, "fragment4"), pingFrame("pongme 2!"), fragment(opCont, true, "fragment5")}
		sender, how := send, ""
		if k.sync {
			sender, how = sendSync, ", frame-wise"
		}
		cs = append(cs, Case{
			ID: k.id, RFC: rfcFragment + " (control frames in between)",
			Desc: "text message in 5 fragments; after the 2nd a ping, whose pong must come before the rest is sent; another ping before the last" + how,
			Steps: []step{
				sender(part1...),
				waitFor("pong 1", func(es []event) bool { return len(es) > 0 }),
				sender(part2...),
			},
			Outcomes: ok(pong("pongme 1!"), pong("pongme 2!"), message("fragment1fragment2fragment3fragment4fragment5")),
			Close:    normalClose,
		})
	}
	return cs
}

// 7.x Close handling.
func closeCases() []Case {
	close1000 := closeFrame(closeBody(1000, ""))
	cs := []Case{
		// 7.1 Basic close behaviour (fuzzer initiated).
		{ID: "7.1.1", RFC: rfcClose, Desc: "text message, then (once echoed) close",
			Steps: []step{send(textFrame("Hello World!"))}, Outcomes: ok(message("Hello World!")),
			Close: normalClose, Adjust: failOnWrongCode},
		{ID: "7.1.2", RFC: rfcClose, Desc: "two close frames: the second is ignored",
			Steps: []step{send(close1000, opFrame(opClose, ""))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.1.3", RFC: rfcClose, Desc: "ping after the close frame: no pong",
			Steps: []step{send(close1000, pingFrame(""))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.1.4", RFC: rfcClose, Desc: "text message after the close frame: ignored",
			Steps: []step{send(close1000, textFrame("Hello World!"))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.1.5", RFC: rfcClose, Desc: "first fragment, close, then the last fragment",
			Steps:    []step{send(fragment(opText, false, "fragment1"), close1000, fragment(opCont, true, "fragment2"))},
			Outcomes: ok(), Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.1.6", RFC: rfcClose + " (implementation defined)", Desc: "256 KiB text message, a small one, close, then ping, back to back",
			Steps: []step{send(frame{op: opText, fin: true, payload: repeatTo("BAsd7&jh23", 256<<10)},
				textFrame("Hello World!"), close1000, pingFrame(""))},
			Outcomes: []outcome{{gradeOK, []event{message("Hello World!")}}, {gradeNonStrict, nil}},
			Close:    normalClose, SuppressClose: true, Adjust: informational},

		// 7.3 Close frame structure: payload length.
		{ID: "7.3.1", RFC: rfcCloseFmt, Desc: "close frame with an empty body",
			Steps: []step{send(closeFrame(nil))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.3.2", RFC: rfcCloseFmt, Desc: "close frame with a one-octet body: 1002 or drop",
			Steps: []step{send(closeFrame([]byte("a")))}, Outcomes: ok(),
			Close: closedWith(false, 1002), SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.3.3", RFC: rfcCloseFmt, Desc: "close frame with a code (1000)",
			Steps: []step{send(close1000)}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.3.4", RFC: rfcCloseFmt, Desc: "close frame with a code and a reason",
			Steps: []step{send(closeFrame(closeBody(1000, "Hello World!")))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.3.5", RFC: rfcCloseFmt, Desc: "close frame with a code and a reason of 123 octets (the most)",
			Steps: []step{send(closeFrame(closeBody(1000, strings.Repeat("*", 123))))}, Outcomes: ok(),
			Close: normalClose, SuppressClose: true, Adjust: failOnWrongCode},
		{ID: "7.3.6", RFC: rfcCloseFmt, Desc: "close frame with a reason of 124 octets (body of 126): 1002 or drop",
			Steps: []step{send(closeFrame(closeBody(1000, strings.Repeat("*", 124))))}, Outcomes: ok(),
			Close: closedWith(false, 1002), SuppressClose: true, Adjust: failOnWrongCode},

		// 7.5 Close frame structure: payload value.
		{ID: "7.5.1", RFC: rfcCloseFmt + "; §8.1", Desc: "close frame with an invalid UTF-8 reason: 1002/1007 or drop",
			Steps: []step{send(closeFrame(closeBody(1000,
				"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")))},
			Outcomes: ok(), Close: closedWith(false, 1002, 1007), SuppressClose: true, Adjust: failOnWrongCode},
	}
	// 7.7 Valid close codes: a clean close with 1000 or the code echoed.
	for i, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cs = append(cs, Case{ID: fmt.Sprintf("7.7.%d", i+1), RFC: rfcCodes + ".1, §7.4.2",
			Desc:  fmt.Sprintf("close with the valid code %d: clean close, 1000 or %d back", code, code),
			Steps: []step{send(closeFrame(closeBody(code, "")))}, Outcomes: ok(),
			Close: closedWith(true, 1000, code), SuppressClose: true, Adjust: failOnWrongCode})
	}
	// 7.9 Invalid close codes: 1002 or drop. The list is the one on
	// Autobahn's master since crossbario/autobahn-testsuite#89, which took
	// out 1014 and 1015 (older releases, such as the 0.8.x Docker image,
	// still expect 1002 for them, as 7.9.6 and 7.9.7).
	for i, code := range []int{0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999} {
		cs = append(cs, Case{ID: fmt.Sprintf("7.9.%d", i+1), RFC: rfcCodes + ".1, §7.4.2",
			Desc:  fmt.Sprintf("close with the invalid code %d: 1002 or drop", code),
			Steps: []step{send(closeFrame(closeBody(code, "")))}, Outcomes: ok(),
			Close: closedWith(false, 1002), SuppressClose: true, Adjust: failOnWrongCode})
	}
	// 7.13 Codes beyond 4999: undefined by the spec, informational.
	for i, code := range []int{5000, 65535} {
		cs = append(cs, Case{ID: fmt.Sprintf("7.13.%d", i+1), RFC: rfcCodes + ".2 (undefined)",
			Desc:  fmt.Sprintf("close with code %d (informational)", code),
			Steps: []step{send(closeFrame(closeBody(code, "")))}, Outcomes: ok(),
			Close: closedWith(false, 1000, code, 1002), SuppressClose: true, Adjust: informational})
	}
	return cs
}

// 9.x Limits/performance, bounded to messages of 64 KiB to 1 MiB.
// Autobahn checks the length and kind of the echo; the client checks the
// payload too.
func limitsCases() []Case {
	const textPattern, binaryPattern = "BAsd7&jh23", "\x00\xfe\x23\xfa\xf0"
	echo := func(op byte, p []byte) []outcome {
		if op == opBinary {
			return ok(binaryMessage(p))
		}
		return ok(messageBytes(p))
	}
	var cs []Case
	// 9.1 text, 9.2 binary: one message of increasing size (9.x.4-9.x.6,
	// 4 to 16 MiB, are left out).
	for sub, k := range []struct {
		op      byte
		pattern string
	}{{opText, textPattern}, {opBinary, binaryPattern}} {
		for i, n := range []int{64 << 10, 256 << 10, 1 << 20} {
			p := repeatTo(k.pattern, n)
			cs = append(cs, Case{
				ID: fmt.Sprintf("9.%d.%d", sub+1, i+1), RFC: rfcLimits,
				Desc:     fmt.Sprintf("%s message of %s", opName(k.op), size(n)),
				Steps:    []step{send(frame{op: k.op, fin: true, payload: p})},
				Outcomes: echo(k.op, p), Close: normalClose,
			})
		}
	}
	// 9.3 text, 9.4 binary: one message in fragments of increasing size.
	// Autobahn's message is 4 MiB; here it is 1 MiB (so 9.x.8 and 9.x.9 send
	// it in one frame).
	const fragmented = 1 << 20
	for sub, k := range []struct {
		op   byte
		fill string
	}{{opText, "*"}, {opBinary, "\xfe"}} {
		p := bytes.Repeat([]byte(k.fill), fragmented)
		for i, n := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
			fs := fragmentMessage(k.op, p, n)
			cs = append(cs, Case{
				ID: fmt.Sprintf("9.%d.%d", sub+3, i+1), RFC: rfcLimits + "; " + rfcFragment,
				Desc:     fmt.Sprintf("%s message of %s (Autobahn: 4 MiB) in fragments of %s (%d frames)", opName(k.op), size(fragmented), size(n), len(fs)),
				Steps:    []step{send(fs...)},
				Outcomes: echo(k.op, p), Close: normalClose,
			})
		}
	}
	// 9.5 text, 9.6 binary: a 1 MiB frame written in chops of increasing size.
	for sub, k := range []struct {
		op      byte
		pattern string
	}{{opText, textPattern}, {opBinary, binaryPattern}} {
		p := repeatTo(k.pattern, 1<<20)
		for i, n := range []int{64, 128, 256, 512, 1024, 2048} {
			cs = append(cs, Case{
				ID: fmt.Sprintf("9.%d.%d", sub+5, i+1), RFC: rfcLimits + "; TCP-agnostic",
				Desc:     fmt.Sprintf("%s message of 1 MiB written in chops of %d octets", opName(k.op), n),
				Steps:    []step{sendChops(n, frame{op: k.op, fin: true, payload: p})},
				Outcomes: echo(k.op, p), Close: normalClose,
			})
		}
	}
	// 9.7 text, 9.8 binary: 1000 round trips of small messages.
	const count = 1000
	for sub, k := range []struct {
		op   byte
		fill string
	}{{opText, "*"}, {opBinary, "\xfe"}} {
		for i, n := range []int{0, 16, 64, 256, 1024, 4096} {
			p := bytes.Repeat([]byte(k.fill), n)
			f := frame{op: k.op, fin: true, payload: p}
			want := make([]event, count)
			for j := range want {
				want[j] = event{kind: "message", payload: p, binary: k.op == opBinary}
			}
			cs = append(cs, Case{
				ID: fmt.Sprintf("9.%d.%d", sub+7, i+1), RFC: rfcLimits,
				Desc:     fmt.Sprintf("%d %s messages of %d octets, one at a time (round-trip time)", count, opName(k.op), n),
				Steps:    []step{roundTrips(count, f)},
				Outcomes: ok(want...), Close: normalClose,
			})
		}
	}
	return cs
}

// size prints a byte count as Autobahn's descriptions do.
func size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d octets", n)
}

// 10.x Misc: auto-fragmentation.
func autoFragmentationCases() []Case {
	p := bytes.Repeat([]byte("*"), 65536)
	return []Case{{
		ID: "10.1.1", RFC: rfcFragment,
		Desc:     "text message of 65536 octets auto-fragmented into frames of 1300 octets (51 frames)",
		Steps:    []step{send(fragmentMessage(opText, p, 1300)...)},
		Outcomes: ok(messageBytes(p)), Close: normalClose,
	}}
}
