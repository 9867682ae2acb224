// Package conformance is moonwire's RFC 6455 conformance suite: a raw-frame
// WebSocket client that walks the same ground as the Autobahn|Testsuite
// fuzzing client (its "case" modules) against the /echo route, served by
// the real built-in scripts/echo.lua on a real node on 127.0.0.1:0.
//
// It holds tests only; run it with
//
//	go test -race ./internal/conformance/
//	go test -race -v -run 'TestAutobahn$' ./internal/conformance/ | grep conformance:
//
// The second form prints the summary line (case counts per category and
// outcome) and the cases the server passes only NON-STRICT.
//
// # How a case is run
//
// Every case runs on its own connection, as Autobahn runs them. The client
// does its own opening handshake and frame encoding, so it can send what a
// well-behaved library never would: reserved bits and opcodes, fragmented
// control frames, close frames with one byte, invalid UTF-8 split at any
// octet, one frame cut into chops written separately. A case is a list of
// steps — writes (whole, frame-wise or octet-wise chopped), the client's
// close, "pause" (Autobahn's continueLater: wait for the server to fail the
// connection; if it does not, record a timeout and go on), and "wait for" a
// server reply — followed by Autobahn's ending: the client closes once the
// expected events have arrived (closedByMe cases), or waits for the server
// to fail the connection.
//
// The client records what Autobahn records — echoed messages, pongs, pings
// and timeouts — and grades the run with Autobahn's rules (case.py): the
// events must equal one of the case's expected outcomes (OK, NON-STRICT);
// the close must be started by the expected side, be clean when required
// (both close frames exchanged and the TCP connection dropped by the
// server), carry one of the expected codes when it carries one, and the
// server, not the client, must drop the TCP connection. Anything the server
// sends is checked too: unmasked, no RSV bits, valid opcodes, control
// frames final and at most 125 octets, fragments in order, text valid
// UTF-8, close frames well formed, nothing after the close frame.
//
// Where the brief of a case allows several outcomes (NON-STRICT, or
// INFORMATIONAL cases such as 7.1.6 and 7.13.x), all of them pass, and the
// one the server chose is logged and counted in the summary.
//
// # Scope
//
// Cases 1.x framing, 2.x ping/pong, 3.x reserved bits, 4.x opcodes, 5.x
// fragmentation, 6.x UTF-8 (6.5-6.23 generated from Autobahn's tables), 7.x
// close handling (7.1, 7.3, 7.5, 7.7, 7.9, 7.13), 9.x limits and
// performance bounded to messages of 64 KiB to 1 MiB (9.3/9.4 send Autobahn's
// 4 MiB message scaled to 1 MiB; 9.1.4-9.1.6 and 9.2.4-9.2.6 are left out),
// 10.1 auto-fragmentation, and 12.x/13.x permessage-deflate (below).
// Timings are Autobahn's where they are verdicts (the 1 s fail-fast window
// of 6.4.x) and shorter where they only pace the client (a "wait for the
// peer" returns as soon as the reply is in).
//
// # permessage-deflate (12.x, 13.x)
//
// The "deflate" profile runs a node with server.compression = true, and
// each case makes Autobahn's offer: its default for 12.x; for 13.x its
// seven offers — the default, then asking for server_no_context_takeover,
// for server_max_window_bits (8 or 15), for both, and a list of three.
// The client checks the answer as RFC 7692 §7.1 requires (no parameter it
// did not offer, a window no larger than asked, server_no_context_takeover
// granted when asked), compresses what it sends with or without context
// takeover as negotiated, and inflates what it receives, keeping the
// server's window when the server keeps its context. RSV1 is allowed on the
// first frame of a data message only.
//
// Each case sends messages of one of Autobahn's 18 sizes (16 octets to
// 128 KiB, some compressed and then cut into frames of 256 octets to
// 32 KiB) one at a time, each once the echo of the last is in, and grades
// the echoes byte for byte. Autobahn sends 1000 messages a case; here the
// count is scaled to about 128 KiB a case (2 to 50 messages). Autobahn's
// data files (Faust, a bitmap, a PDF, JSON, HTML) are replaced by
// generated data of the same kinds. The client cannot check that a server
// which granted server_max_window_bits=8 keeps its back-references within
// 256 octets (compress/flate does not expose them); moonwire sends such a
// client its messages uncompressed.
//
// # Known bugs
//
// A case whose failure is a known server bug is listed in knownBugs: it
// still runs, and is skipped with "BUG: ..." while it fails; once it passes
// the suite fails, so that the entry gets removed.
package conformance
