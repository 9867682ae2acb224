package wsconn

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

const fuzzMaxMessage = 4096

// fuzzRun is what one way of feeding an input to a Parser produced.
type fuzzRun struct {
	events   []got
	consumed int
	errCode  ws.StatusCode // 0: no error
	need     int           // Need of the final None answer
}

// runFuzzParser feeds data to a fresh Parser the way the router does: a
// buffer that grows by at most chunk bytes per read (chunk <= 0: all at
// once), decoding every complete frame after each read. It checks the
// per-call invariants and returns what was decoded.
func runFuzzParser(t *testing.T, data []byte, chunk int) fuzzRun {
	if chunk <= 0 {
		chunk = len(data)
	}
	buf := bytes.Clone(data)
	p := &Parser{MaxMessage: fuzzMaxMessage}
	defer p.Reset()
	var run fuzzRun
	r, w := 0, 0
	for {
		for r < w {
			b := buf[r:w]
			ev, n, err := p.Next(b)
			if n < 0 || n > len(b) {
				t.Fatalf("Next(%d bytes) consumed %d", len(b), n)
			}
			if err != nil {
				code, _, ok := CloseStatus(err)
				if !ok {
					t.Fatalf("error without a close status: %v", err)
				}
				switch code {
				case ws.StatusProtocolError, ws.StatusInvalidFramePayloadData, ws.StatusMessageTooBig:
				default:
					t.Fatalf("unexpected close code %d", code)
				}
				if n != 0 || ev.Kind != None || ev.Owned {
					t.Fatalf("error %v with n=%d kind=%v owned=%v", err, n, ev.Kind, ev.Owned)
				}
				run.errCode = code
				run.consumed = r
				run.need = 0
				return run
			}
			if n == 0 {
				if ev.Kind != None || ev.Payload != nil || ev.Owned {
					t.Fatalf("n == 0 with kind %v", ev.Kind)
				}
				if ev.Need != 0 && ev.Need <= len(b) {
					t.Fatalf("Need %d with %d bytes buffered", ev.Need, len(b))
				}
				if ev.Need > fuzzMaxMessage+ws.MaxHeaderSize {
					t.Fatalf("Need %d beyond MaxMessage", ev.Need)
				}
				run.need = ev.Need
				break
			}
			run.need = 0
			switch ev.Kind {
			case None:
				if ev.Payload != nil || ev.Owned {
					t.Fatal("None event with a payload")
				}
				if !p.Assembling() {
					t.Fatal("absorbed a fragment without assembling")
				}
			case Text, Binary:
				if len(ev.Payload) > fuzzMaxMessage {
					t.Fatalf("%d-byte message with MaxMessage %d", len(ev.Payload), fuzzMaxMessage)
				}
				if ev.Kind == Text && !utf8.Valid(ev.Payload) {
					t.Fatalf("text message with invalid UTF-8: %q", ev.Payload)
				}
				if ev.Owned && p.Assembling() {
					t.Fatal("still assembling after a reassembled message")
				}
			case Ping, Pong, Close:
				if ev.Owned || len(ev.Payload) > ws.MaxControlFramePayloadSize {
					t.Fatalf("%v: owned=%v, %d bytes", ev.Kind, ev.Owned, len(ev.Payload))
				}
				if ev.Kind == Close {
					if len(ev.Payload) == 0 {
						if ev.Code != ws.StatusNoStatusRcvd || ev.Reason != "" {
							t.Fatalf("empty close: (%d, %q)", ev.Code, ev.Reason)
						}
					} else if err := checkCloseData(ev.Code, ev.Reason); err != nil {
						t.Fatalf("accepted close (%d, %q): %v", ev.Code, ev.Reason, err)
					}
				}
			default:
				t.Fatalf("unknown kind %d", ev.Kind)
			}
			if !ev.Owned && !within(ev.Payload, b[:n]) {
				t.Fatalf("%v payload outside the consumed bytes", ev.Kind)
			}
			if ev.Owned && len(ev.Payload) > 0 && within(ev.Payload, buf) {
				t.Fatal("Owned payload aliases the input")
			}
			r += n
			if ev.Kind != None {
				run.events = append(run.events, capture(t, ev))
			}
		}
		if w == len(buf) {
			run.consumed = r
			return run
		}
		w = min(w+chunk, len(buf))
	}
}

// FuzzParser feeds arbitrary bytes to a Parser, whole and (when chunk is
// non-zero) chunk bytes at a time: Next must never panic, never consume
// more than it is given, keep non-owned payloads inside the input, and the
// two ways of feeding must decode exactly the same.
func FuzzParser(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed, byte(0))
		f.Add(seed, byte(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk byte) {
		whole := runFuzzParser(t, data, 0)
		if chunk == 0 {
			return
		}
		inc := runFuzzParser(t, data, int(chunk))
		if !equalEvents(whole.events, inc.events) || whole.errCode != inc.errCode ||
			whole.consumed != inc.consumed || whole.need != inc.need {
			t.Fatalf("whole and %d-byte reads disagree:\nwhole %+v\n inc  %+v", chunk, whole, inc)
		}
	})
}

// fuzzSeeds are a few valid and invalid streams; testdata/fuzz/FuzzParser
// holds them (and more) in the corpus format.
func fuzzSeeds() [][]byte {
	return [][]byte{
		mframe(ws.OpText, "hello"),
		cat(mfrag(false, ws.OpText, "He\xe4"), mframe(ws.OpPing, "p"), mfrag(true, ws.OpContinuation, "\xb8\x96")),
		cat(mfrag(false, ws.OpBinary, "a"), mfrag(false, ws.OpContinuation, "b"), mfrag(true, ws.OpContinuation, "c")),
		mframe(ws.OpClose, closePayload(1000, "bye")),
		mframe(ws.OpClose, closePayload(1012, "restarting")),
		mframe(ws.OpBinary, textOf(300)),
		encodeClient(true, 0, ws.OpText, []byte("unmasked"), false),
		mframe(ws.OpText, "\xed\xa0\x80"),
		encodeHeader(true, 0, ws.OpBinary, fuzzMaxMessage+1, true),
	}
}

// checkCloseData is the fuzz oracle for a close frame's body: gobwas/ws's
// check, except that it predates the codes IANA registered after RFC 6455
// (1012 service restart, 1013 try again later, 1014 bad gateway), which a
// peer may send.
func checkCloseData(code ws.StatusCode, reason string) error {
	if code >= 1012 && code <= 1014 {
		if !utf8.ValidString(reason) {
			return errors.New("reason is not UTF-8")
		}
		return nil
	}
	return ws.CheckCloseFrameData(code, reason)
}
