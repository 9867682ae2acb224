package conformance

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestCaseTable checks the case table against Autobahn's: every
// subcategory has Autobahn's number of cases (9.x: the bounded subset), IDs
// are unique and in order, and every case can be graded.
func TestCaseTable(t *testing.T) {
	t.Parallel()
	want := map[string]int{
		"1.1": 8, "1.2": 8,
		"2": 11, "3": 7, "4.1": 5, "4.2": 5, "5": 20,
		"6.1": 3, "6.2": 4, "6.3": 2, "6.4": 4, "6.5": 5, "6.6": 11, "6.7": 4, "6.8": 2, "6.9": 4,
		"6.10": 3, "6.11": 5, "6.12": 8, "6.13": 5, "6.14": 10, "6.15": 1, "6.16": 3, "6.17": 5,
		"6.18": 5, "6.19": 5, "6.20": 7, "6.21": 8, "6.22": 34, "6.23": 7,
		"7.1": 6, "7.3": 6, "7.5": 1, "7.7": 13, "7.9": 9, "7.13": 2,
		"9.1": 3, "9.2": 3, "9.3": 9, "9.4": 9, "9.5": 6, "9.6": 6, "9.7": 6, "9.8": 6,
		"10.1": 1,
		"12.1": 18, "12.2": 18, "12.3": 18, "12.4": 18, "12.5": 18,
		"13.1": 18, "13.2": 18, "13.3": 18, "13.4": 18, "13.5": 18, "13.6": 18, "13.7": 18,
	}
	got := map[string]int{}
	seen := map[string]bool{}
	cases := allCases()
	for i, c := range cases {
		if seen[c.ID] {
			t.Errorf("duplicate case %s", c.ID)
		}
		seen[c.ID] = true
		if i > 0 && compareIDs(cases[i-1].ID, c.ID) >= 0 {
			t.Errorf("case %s comes after %s", c.ID, cases[i-1].ID)
		}
		if c.RFC == "" || c.Desc == "" || len(c.Steps) == 0 || len(c.Outcomes) == 0 {
			t.Errorf("case %s is incomplete", c.ID)
		}
		if !c.Close.byMe && c.SuppressClose {
			t.Errorf("case %s: SuppressClose without a client close", c.ID)
		}
		parts := strings.Split(c.ID, ".")
		sub := parts[0]
		if len(parts) == 3 {
			sub += "." + parts[1]
		}
		got[sub]++
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("subcategory %s: %d cases, Autobahn has %d", k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected subcategory %s", k)
		}
	}
	for id := range knownBugs {
		if !seen[id] {
			t.Errorf("knownBugs names %s, which is not a case", id)
		}
	}
	if len(cases) < 250 {
		t.Errorf("only %d cases", len(cases))
	}
}

// TestUTF8Table checks Autobahn's verdicts against Go's validator: they
// must agree, or the 6.x expectations would be in doubt.
func TestUTF8Table(t *testing.T) {
	t.Parallel()
	for i, f := range utf8Families() {
		for j, s := range f.seqs {
			if !s.utf8Agrees() {
				t.Errorf("6.%d.%d %x: Autobahn says valid=%t, Go disagrees", i+5, j+1, s.payload, s.valid)
			}
		}
	}
}

// TestFragmentMessage checks the client's fragmentation against Autobahn's
// sendMessage, including 10.1.1's frame counts (1 text frame and 50
// continuations, as Autobahn's txFrameStats check expects).
func TestFragmentMessage(t *testing.T) {
	t.Parallel()
	count := func(fs []frame) (text, cont int, lastFin bool) {
		for i, f := range fs {
			switch f.op {
			case opText:
				text++
			case opCont:
				cont++
			}
			if f.fin != (i == len(fs)-1) {
				t.Errorf("frame %d of %d: fin=%t", i, len(fs), f.fin)
			}
		}
		return text, cont, fs[len(fs)-1].fin
	}
	p := make([]byte, 65536)
	if text, cont, _ := count(fragmentMessage(opText, p, 1300)); text != 1 || cont != 50 {
		t.Errorf("10.1.1: %d text and %d continuation frames, want 1 and 50", text, cont)
	}
	// An exact multiple ends with an empty final frame, as in Autobahn.
	fs := fragmentMessage(opText, make([]byte, 256), 64)
	if len(fs) != 5 || len(fs[4].payload) != 0 {
		t.Errorf("256 octets in 64: %d frames, last of %d octets; want 5, the last empty", len(fs), len(fs[len(fs)-1].payload))
	}
	if fs := fragmentMessage(opText, make([]byte, 64), 64); len(fs) != 1 || !fs[0].fin {
		t.Errorf("64 octets in 64: %d frames, want 1", len(fs))
	}
}

// TestGrading checks the grader on hand-made runs.
func TestGrading(t *testing.T) {
	t.Parallel()
	echo := Case{ID: "x", Outcomes: ok(message("hi")), Close: normalClose}
	fail := Case{ID: "y", Outcomes: okOrNonStrict(message("hi")), Close: failedWith(1002)}
	clean := func(s *session) *session {
		s.sentClose, s.closedByMe, s.gotClose, s.eof = true, true, true, true
		s.remoteHasCode, s.remoteCode = true, 1000
		return s
	}
	failedByServer := func(s *session, code int) *session {
		s.gotClose, s.sentClose, s.eof = true, true, true
		s.remoteHasCode, s.remoteCode = true, code
		return s
	}
	tests := []struct {
		name          string
		c             Case
		s             *session
		behavior, cls string
	}{
		{"echo, clean close", echo, clean(&session{events: []event{message("hi")}}), gradeOK, gradeOK},
		{"no echo", echo, clean(&session{}), gradeFailed, gradeOK},
		{"binary instead of text", echo, clean(&session{events: []event{binaryMessage([]byte("hi"))}}), gradeFailed, gradeOK},
		{"server did not drop TCP", echo, func() *session {
			s := clean(&session{events: []event{message("hi")}})
			s.droppedByMe = true
			return s
		}(), gradeOK, gradeUnclean},
		{"server failed it instead", echo, failedByServer(&session{events: []event{message("hi")}}, 1002), gradeOK, gradeFailed},
		{"fails after the echo", fail, failedByServer(&session{events: []event{message("hi")}}, 1002), gradeOK, gradeOK},
		{"fails before the echo", fail, failedByServer(&session{}, 1002), gradeNonStrict, gradeOK},
		{"fails with a wrong code", fail, failedByServer(&session{}, 1011), gradeNonStrict, gradeWrongCode},
		{"drops TCP without a close frame", fail, &session{eof: true}, gradeNonStrict, gradeOK},
		{"never fails", fail, &session{droppedByMe: true}, gradeNonStrict, gradeFailedByClient},
		{"violation", fail, func() *session {
			s := failedByServer(&session{}, 1002)
			s.violations = []string{"masked"}
			return s
		}(), gradeFailed, gradeOK},
	}
	for _, tc := range tests {
		v := tc.c.grade(tc.s)
		if v.behavior != tc.behavior || v.closeBehavior != tc.cls {
			t.Errorf("%s: %v; want %s, close %s", tc.name, v, tc.behavior, tc.cls)
		}
	}
}
