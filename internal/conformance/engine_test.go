package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Grades, as Autobahn's Case class names them.
const (
	gradeOK             = "OK"
	gradeNonStrict      = "NON-STRICT"
	gradeInformational  = "INFORMATIONAL"
	gradeFailed         = "FAILED"
	gradeUnclean        = "UNCLEAN"
	gradeWrongCode      = "WRONG CODE"
	gradeFailedByClient = "FAILED BY CLIENT"
)

// Case is one conformance case.
type Case struct {
	// ID is Autobahn's case number ("6.4.1").
	ID string
	// RFC is the part of the specification the case exercises.
	RFC string
	// Desc says what the client sends.
	Desc string
	// Profile is the server configuration and client offer the case needs
	// (the zero value is plain: no extension).
	Profile profile
	// Steps is the client's traffic.
	Steps []step
	// Outcomes are the accepted event sequences with their grades, tried in
	// order (Autobahn's expected).
	Outcomes []outcome
	// Close is how the connection must end (Autobahn's expectedClose).
	Close closing
	// SuppressClose: the client's close is one of the steps; it does not
	// close again once the events are in (Autobahn's suppressClose).
	SuppressClose bool
	// Adjust revises the verdict, as some Autobahn cases override
	// onConnectionLost (informational cases, wrong codes that fail).
	Adjust func(v *verdict, s *session)
}

// outcome is one accepted sequence of events.
type outcome struct {
	grade  string
	events []event
}

// closing is Autobahn's expectedClose.
type closing struct {
	// byMe: the client starts the closing handshake; otherwise the server
	// must fail the connection.
	byMe bool
	// codes the server's close frame may carry (an empty close is fine).
	codes []int
	// clean: both close frames exchanged, TCP dropped by the server.
	clean bool
}

// normalClose: the client closes with 1000 once the expected events are in
// and wants a clean close with 1000 back (or an empty close frame).
var normalClose = closing{byMe: true, codes: []int{1000}, clean: true}

// failedWith: the server must fail the connection (close frame with one of
// codes, or just dropping TCP).
func failedWith(codes ...int) closing { return closing{byMe: false, codes: codes} }

// closedWith: the client starts the close; the answer must carry one of
// codes and, if clean is set, complete cleanly.
func closedWith(clean bool, codes ...int) closing {
	return closing{byMe: true, codes: codes, clean: clean}
}

func ok(events ...event) []outcome { return []outcome{{gradeOK, events}} }

// okOrNonStrict accepts events (OK) or nothing at all (NON-STRICT), the
// usual pair for "echo, then fail on the bad frame".
func okOrNonStrict(events ...event) []outcome {
	return []outcome{{gradeOK, events}, {gradeNonStrict, nil}}
}

// verdict is the grading of one run.
type verdict struct {
	behavior      string
	detail        string
	closeBehavior string
	closeDetail   string
}

func (v verdict) passed() bool {
	return (v.behavior == gradeOK || v.behavior == gradeNonStrict || v.behavior == gradeInformational) &&
		(v.closeBehavior == gradeOK || v.closeBehavior == gradeInformational)
}

func (v verdict) String() string {
	return fmt.Sprintf("behaviour %s (%s); close %s (%s)", v.behavior, v.detail, v.closeBehavior, v.closeDetail)
}

// step is one thing the client does.
type step struct {
	desc string
	run  func(s *session)
}

// send writes frames back to back in one write, as Autobahn's sendFrame
// calls made in one reactor turn leave in one TCP segment. A frame made by
// closeFrame starts the closing handshake.
func send(frames ...frame) step {
	return step{desc: describeFrames(frames), run: func(s *session) {
		var b []byte
		for _, f := range frames {
			if f.handshake {
				s.markClose()
			}
			b = append(b, f.encode()...)
		}
		s.write(b)
	}}
}

// sendSync writes each frame with a write of its own (Autobahn's
// sync=True, "frame-wise chops").
func sendSync(frames ...frame) step {
	return step{desc: "frame-wise " + describeFrames(frames), run: func(s *session) {
		for _, f := range frames {
			if f.handshake {
				s.markClose()
			}
			s.write(f.encode())
		}
	}}
}

// sendChops writes each frame's octets in chops of n octets, each chop a
// write of its own (Autobahn's chopsize).
func sendChops(n int, frames ...frame) step {
	return step{desc: fmt.Sprintf("%d-octet chops of %s", n, describeFrames(frames)), run: func(s *session) {
		for _, f := range frames {
			if f.handshake {
				s.markClose()
			}
			b := f.encode()
			for len(b) > 0 && !s.eof {
				k := min(n, len(b))
				s.write(b[:k])
				b = b[k:]
			}
		}
	}}
}

// sendRaw writes bytes as they are: a part of a frame (6.4.3). ends says
// whether they end the frame.
func sendRaw(desc string, b []byte, ends bool) step {
	return step{desc: desc, run: func(s *session) {
		s.write(b)
		s.midFrame = !ends
		if ends {
			for _, p := range s.pendingPongs {
				s.write(frame{op: opPong, fin: true, payload: p}.encode())
			}
			s.pendingPongs = nil
		}
	}}
}

// pause is Autobahn's continueLater: the client waits up to d for the
// server to close the connection. If it does, the rest of the steps are
// not run; if not, a timeout labelled label is recorded and the case goes
// on. The wait ends as soon as the server's close is in.
func pause(label string, d time.Duration) step {
	return step{desc: fmt.Sprintf("wait up to %v for the server to fail (else timeout %s)", d, label), run: func(s *session) {
		if s.pump(time.Now().Add(d), func() bool { return s.gotClose || s.eof }) {
			s.stopped = true
			return
		}
		s.events = append(s.events, timeout(label))
	}}
}

// waitFor waits until the events received so far satisfy cond (a reply the
// case needs before it goes on), or the server closes. If replyTimeout
// passes first, a timeout labelled label is recorded, which no expected
// outcome contains, and the case goes on.
func waitFor(label string, cond func(es []event) bool) step {
	return step{desc: "wait for " + label, run: func(s *session) {
		if !s.pump(time.Now().Add(replyTimeout), func() bool { return cond(s.events) || s.gotClose }) {
			s.events = append(s.events, timeout(label))
		}
	}}
}

// roundTrips sends n copies of f, each once the echo of the previous one
// is in (Autobahn's 9.7/9.8 round-trip loop). It stops at the first wrong
// or missing echo.
func roundTrips(n int, f frame) step {
	want := event{kind: "message", payload: f.payload, binary: f.op == opBinary}
	return step{desc: fmt.Sprintf("%d round trips of %s", n, describeFrames([]frame{f})), run: func(s *session) {
		for range n {
			before := len(s.events)
			s.write(f.encode())
			if !s.pump(time.Now().Add(replyTimeout), func() bool { return len(s.events) > before || s.gotClose }) {
				return
			}
			if s.gotClose || !s.events[len(s.events)-1].equal(want) {
				return
			}
		}
	}}
}

// markClose notes that the client starts (or answers) the closing
// handshake with the frame about to be written.
func (s *session) markClose() {
	if !s.sentClose {
		s.sentClose = true
		s.closedByMe = !s.gotClose
	}
}

// run plays the case on s: the steps, then Autobahn's ending.
func (c *Case) run(s *session) {
	for _, st := range c.Steps {
		if s.stopped {
			break
		}
		st.run(s)
	}
	if c.Close.byMe && !c.SuppressClose {
		// finishWhenDone: close once the events are what a case expects
		// (or can no longer become it); closeAfter: close anyway.
		s.pump(time.Now().Add(replyTimeout), func() bool { return s.gotClose || c.settled(s.events) })
		if !s.gotClose && !s.eof {
			s.sendClose(closeBody(1000, ""))
		}
	}
	// Wait for the server to drop the TCP connection (after the closing
	// handshake, or when it fails the connection); else drop it.
	if !s.pump(time.Now().Add(failTimeout), func() bool { return s.eof }) {
		s.droppedByMe = true
	}
}

// settled reports whether es is one of the expected outcomes or cannot
// grow into one.
func (c *Case) settled(es []event) bool {
	for _, o := range c.Outcomes {
		if eventsEqual(es, o.events) {
			return true
		}
	}
	for _, o := range c.Outcomes {
		if isPrefix(es, o.events) {
			return false
		}
	}
	return true
}

// grade applies Autobahn's rules (case.py onConnectionLost) to the run.
func (c *Case) grade(s *session) verdict {
	v := verdict{behavior: gradeFailed, detail: "actual events differ from any expected: got " + showEvents(s.events)}
	for _, o := range c.Outcomes {
		if eventsEqual(s.events, o.events) {
			v.behavior, v.detail = o.grade, "events "+showEvents(s.events)
			break
		}
	}
	closeState := describeClose(s)
	switch {
	case c.Close.byMe != s.closedByMe:
		v.closeBehavior = gradeFailed
		v.closeDetail = "the connection was failed by the wrong endpoint: " + closeState
	case c.Close.clean && !s.wasClean():
		v.closeBehavior = gradeUnclean
		v.closeDetail = "the spec requires a clean close here: " + closeState
	case s.remoteHasCode && !slices.Contains(c.Close.codes, s.remoteCode):
		v.closeBehavior = gradeWrongCode
		v.closeDetail = fmt.Sprintf("the close code should have been %v or empty: %s", c.Close.codes, closeState)
	case s.droppedByMe:
		v.closeBehavior = gradeFailedByClient
		v.closeDetail = "the server did not close the TCP connection: " + closeState
	default:
		v.closeBehavior = gradeOK
		v.closeDetail = closeState
	}
	if c.Adjust != nil {
		c.Adjust(&v, s)
	}
	if len(s.violations) > 0 {
		v.behavior = gradeFailed
		v.detail = "server protocol violation: " + strings.Join(s.violations, "; ")
	}
	return v
}

// describeClose says how the connection ended.
func describeClose(s *session) string {
	var parts []string
	switch {
	case s.closedByMe:
		parts = append(parts, "client closed first")
	case s.gotClose:
		parts = append(parts, "server closed first")
	}
	switch {
	case !s.gotClose:
		parts = append(parts, "no server close frame")
	case s.remoteHasCode:
		parts = append(parts, fmt.Sprintf("server close code %d %q", s.remoteCode, s.remoteReason))
	default:
		parts = append(parts, "server close frame without code")
	}
	switch {
	case s.droppedByMe:
		parts = append(parts, "TCP dropped by the client")
	case s.eof:
		parts = append(parts, "TCP dropped by the server")
	}
	return strings.Join(parts, ", ")
}

// failOnWrongCode is the override of the 7.x cases: a wrong close code
// fails the case, not only its close.
func failOnWrongCode(v *verdict, _ *session) {
	if v.closeBehavior == gradeWrongCode {
		v.behavior, v.detail = gradeFailed, v.closeDetail
	}
}

// informational grades the case INFORMATIONAL whatever happened (the spec
// leaves the behaviour open), keeping what happened as the detail.
func informational(v *verdict, s *session) {
	v.behavior, v.detail = gradeInformational, "events "+showEvents(s.events)
	v.closeBehavior, v.closeDetail = gradeInformational, describeClose(s)
}

// Frame constructors.

func textFrame(p string) frame   { return frame{op: opText, fin: true, payload: []byte(p)} }
func binaryFrame(p []byte) frame { return frame{op: opBinary, fin: true, payload: p} }
func pingFrame(p string) frame   { return frame{op: opPing, fin: true, payload: []byte(p)} }
func pongFrame(p string) frame   { return frame{op: opPong, fin: true, payload: []byte(p)} }
func opFrame(op byte, p string) frame {
	return frame{op: op, fin: true, payload: []byte(p)}
}

// fragment is a frame of a fragmented message: op with fin as given.
func fragment(op byte, fin bool, p string) frame {
	return frame{op: op, fin: fin, payload: []byte(p)}
}

func (f frame) withRSV(rsv byte) frame { f.rsv = rsv; return f }

// closeFrame is the client's close frame: it starts the closing
// handshake (Autobahn's sendClose/sendCloseFrame). A raw close frame that
// does not (Autobahn's sendFrame(opcode=8)) is opFrame(opClose, ...).
func closeFrame(body []byte) frame {
	return frame{op: opClose, fin: true, payload: body, handshake: true}
}

// closeBody is a close frame body: the code, then the reason.
func closeBody(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// repeatTo is Autobahn's payload_len: pattern repeated, then cut, to n
// bytes.
func repeatTo(pattern string, n int) []byte {
	b := bytes.Repeat([]byte(pattern), n/len(pattern)+1)
	return b[:n]
}

// fragmentMessage splits a message as Autobahn's sendMessage does with a
// fragment size: frames of size octets, and, when the payload is an exact
// multiple of size (and larger than it), a final empty frame.
func fragmentMessage(op byte, payload []byte, size int) []frame {
	if len(payload) <= size {
		return []frame{{op: op, fin: true, payload: payload}}
	}
	var fs []frame
	for i, first := 0, true; ; i += size {
		j, done := i+size, false
		if j > len(payload) {
			j, done = len(payload), true
		}
		o := opCont
		if first {
			o, first = op, false
		}
		fs = append(fs, frame{op: o, fin: done, payload: payload[i:j]})
		if done {
			return fs
		}
	}
}

// splitFrame encodes f and cuts the encoding at the given payload offsets:
// the first part holds the header. It is one frame arriving in pieces.
func splitFrame(f frame, offsets ...int) [][]byte {
	b := f.encode()
	head := len(b) - len(f.payload)
	var parts [][]byte
	last := 0
	for _, o := range offsets {
		parts = append(parts, b[last:head+o])
		last = head + o
	}
	return append(parts, b[last:])
}

func describeFrames(fs []frame) string {
	if len(fs) > 4 {
		total := 0
		for _, f := range fs {
			total += len(f.payload)
		}
		return fmt.Sprintf("%d frames (%d payload bytes)", len(fs), total)
	}
	var parts []string
	for _, f := range fs {
		d := opName(f.op)
		if !f.fin {
			d += " (FIN=0)"
		}
		if f.rsv != 0 {
			d += fmt.Sprintf(" (RSV=%d)", f.rsv)
		}
		parts = append(parts, d+" "+showPayload(f.payload))
	}
	return strings.Join(parts, ", ")
}

// tally counts outcomes by category for the summary line.
type tally struct {
	mu     sync.Mutex
	counts map[string]map[string]int // category -> outcome -> count
	notes  map[string][]string       // outcome -> "id: note"
}

// Outcome labels of the summary, in the order printed.
var outcomeOrder = []string{"ok", "non-strict", "informational", "failed", "skipped (bugs)"}

func (t *tally) record(id, outcome, note string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts, t.notes = map[string]map[string]int{}, map[string][]string{}
	}
	cat := category(id)
	if t.counts[cat] == nil {
		t.counts[cat] = map[string]int{}
	}
	t.counts[cat][outcome]++
	if note != "" {
		t.notes[outcome] = append(t.notes[outcome], id+" ("+note+")")
	}
}

// category is "6.x" for "6.4.1".
func category(id string) string {
	major, _, _ := strings.Cut(id, ".")
	return major + ".x"
}

func (t *tally) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	cats := make([]string, 0, len(t.counts))
	for c := range t.counts {
		cats = append(cats, c)
	}
	sort.Slice(cats, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimSuffix(cats[i], ".x"))
		b, _ := strconv.Atoi(strings.TrimSuffix(cats[j], ".x"))
		return a < b
	})
	totals, n := map[string]int{}, 0
	var parts []string
	for _, c := range cats {
		var ps []string
		for _, o := range outcomeOrder {
			if k := t.counts[c][o]; k > 0 {
				ps = append(ps, fmt.Sprintf("%d %s", k, o))
				totals[o] += k
				n += k
			}
		}
		parts = append(parts, c+" "+strings.Join(ps, " "))
	}
	var tot []string
	for _, o := range outcomeOrder {
		if totals[o] > 0 || o == "ok" || o == "skipped (bugs)" {
			tot = append(tot, fmt.Sprintf("%d %s", totals[o], o))
		}
	}
	return fmt.Sprintf("conformance: %s; total %d cases: %s", strings.Join(parts, ", "), n, strings.Join(tot, ", "))
}

// details lists the cases of every outcome but ok, with their notes.
func (t *tally) details() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lines []string
	for _, o := range outcomeOrder[1:] {
		if ns := t.notes[o]; len(ns) > 0 {
			sorted := slices.Clone(ns)
			slices.SortFunc(sorted, func(a, b string) int { return compareIDs(firstField(a), firstField(b)) })
			lines = append(lines, fmt.Sprintf("conformance: %s: %s", o, strings.Join(sorted, "; ")))
		}
	}
	return lines
}

func firstField(s string) string { f, _, _ := strings.Cut(s, " "); return f }

// compareIDs orders case IDs numerically, part by part.
func compareIDs(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return len(as) - len(bs)
}
