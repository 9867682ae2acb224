package conformance

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// permessage-deflate (RFC 7692) on the client side: reading the server's
// answer to an offer, compressing what the client sends and inflating what
// it receives, and the 12.x/13.x cases built on them.

// pmdState is a negotiated permessage-deflate, as the client applies it.
type pmdState struct {
	// serverNoContext: every server message is compressed on its own, so
	// the client inflates each without the previous ones.
	serverNoContext bool
	// clientNoContext: the client compresses each message on its own.
	clientNoContext bool
	// serverBits is the server's window limit the response states (0:
	// none, 15 then).
	serverBits int

	// window is the tail of what earlier server messages inflated to, the
	// inflater's dictionary when the server keeps its context.
	window []byte
	w      *flate.Writer
	wbuf   bytes.Buffer
}

// maxWindow is the largest LZ77 window (RFC 1951), 2^15.
const maxWindow = 1 << 15

// extParams is one extension of a Sec-WebSocket-Extensions list: its name
// and parameters, values unquoted ("" for a parameter without one).
type extParams struct {
	name   string
	params map[string]string
	dup    string // a parameter given twice, if any
}

// parseExtensions splits a Sec-WebSocket-Extensions value (RFC 6455 §9.1).
// None of the parameters used here contain commas or semicolons.
func parseExtensions(v string) []extParams {
	var out []extParams
	for _, ext := range strings.Split(v, ",") {
		parts := strings.Split(ext, ";")
		e := extParams{name: strings.TrimSpace(parts[0]), params: map[string]string{}}
		for _, p := range parts[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
			k, val = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(val), `"`)
			if _, seen := e.params[k]; seen {
				e.dup = k
			}
			e.params[k] = val
		}
		out = append(out, e)
	}
	return out
}

// windowBits parses a *_max_window_bits value: 8 to 15 (RFC 7692 §7.1.2).
func windowBits(v string) (int, bool) {
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 8 && n <= 15
}

// acceptDeflate checks the server's Sec-WebSocket-Extensions answer to
// offer as RFC 7692 §5 and §7.1 require of a client, and returns what was
// negotiated.
func acceptDeflate(offer, answer string) (*pmdState, error) {
	exts := parseExtensions(answer)
	if len(exts) != 1 || exts[0].name != "permessage-deflate" {
		return nil, fmt.Errorf("server answered %q: one permessage-deflate expected", answer)
	}
	e := exts[0]
	if e.dup != "" {
		return nil, fmt.Errorf("server answered %q: %s twice (RFC 7692 §7)", answer, e.dup)
	}
	offers := parseExtensions(offer)
	offered := func(param string) (string, bool) {
		v, ok := offers[0].params[param]
		return v, ok && len(offers) == 1
	}
	anyOffered := func(param string) bool {
		for _, o := range offers {
			if _, ok := o.params[param]; ok {
				return true
			}
		}
		return false
	}
	d := &pmdState{}
	for k, v := range e.params {
		switch k {
		case "server_no_context_takeover", "client_no_context_takeover":
			if v != "" {
				return nil, fmt.Errorf("server answered %q: %s takes no value (RFC 7692 §7.1.1)", answer, k)
			}
		case "server_max_window_bits":
			n, ok := windowBits(v)
			if !ok {
				return nil, fmt.Errorf("server answered %q: bad server_max_window_bits (RFC 7692 §7.1.2.1)", answer)
			}
			if want, single := offered(k); single {
				if m, _ := windowBits(want); n > m {
					return nil, fmt.Errorf("server answered %q: a larger window than the %s offered (RFC 7692 §7.1.2.1)", answer, want)
				}
			}
			d.serverBits = n
		case "client_max_window_bits":
			n, ok := windowBits(v)
			if !ok || !anyOffered(k) {
				// §7.1.2.2: only in answer to an offer that has it.
				return nil, fmt.Errorf("server answered %q: client_max_window_bits was not offered or is bad (RFC 7692 §7.1.2.2)", answer)
			}
			if n < 15 {
				// compress/flate cannot compress with a smaller window.
				return nil, fmt.Errorf("server answered %q: this client cannot honour a window under 15 bits", answer)
			}
		default:
			return nil, fmt.Errorf("server answered %q: unknown parameter %s (RFC 7692 §5)", answer, k)
		}
	}
	_, d.serverNoContext = e.params["server_no_context_takeover"]
	_, d.clientNoContext = e.params["client_no_context_takeover"]
	if _, single := offered("server_no_context_takeover"); single && !d.serverNoContext {
		return nil, fmt.Errorf("server answered %q without the server_no_context_takeover offered (RFC 7692 §7.1.1.1)", answer)
	}
	if _, single := offered("server_max_window_bits"); single && d.serverBits == 0 {
		return nil, fmt.Errorf("server answered %q without the server_max_window_bits offered (RFC 7692 §7.1.2.1)", answer)
	}
	return d, nil
}

// inflateTail ends a message's compressed bytes: the sync-flush marker the
// sender removed (RFC 7692 §7.2.2), then an empty final stored block so
// that the inflater sees the end of a stream.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflate decompresses one server message.
func (d *pmdState) inflate(p []byte) ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader(inflateTail))
	var r io.ReadCloser
	if d.serverNoContext {
		r = flate.NewReader(src)
	} else {
		r = flate.NewReaderDict(src, d.window)
	}
	out, err := io.ReadAll(io.LimitReader(r, maxInbound+1))
	if err == nil && len(out) > maxInbound {
		err = errors.New("inflates past the client's limit")
	}
	if err != nil {
		return nil, err
	}
	if !d.serverNoContext {
		d.window = append(d.window, out...)
		if len(d.window) > maxWindow {
			d.window = append([]byte(nil), d.window[len(d.window)-maxWindow:]...)
		}
	}
	return out, nil
}

// compress compresses one client message (RFC 7692 §7.2.1): deflate, sync
// flush, and the flush's 00 00 ff ff tail removed. The context carries
// over from message to message unless the server asked for
// client_no_context_takeover.
func (d *pmdState) compress(p []byte) []byte {
	d.wbuf.Reset()
	if d.w == nil {
		d.w, _ = flate.NewWriter(&d.wbuf, flate.DefaultCompression)
	} else if d.clientNoContext {
		d.w.Reset(&d.wbuf)
	}
	_, _ = d.w.Write(p)
	_ = d.w.Flush()
	return bytes.Clone(bytes.TrimSuffix(d.wbuf.Bytes(), []byte{0x00, 0x00, 0xff, 0xff}))
}

// compressedRoundTrips sends each payload as a compressed message (RSV1 on
// its first frame), once the echo of the previous one is in: the loop of
// Autobahn's 12.x and 13.x. With fragSize > 0 the compressed bytes go out
// in frames of that many octets, in one write. It stops at the first wrong
// or missing echo.
func compressedRoundTrips(op byte, payloads [][]byte, fragSize int) step {
	desc := fmt.Sprintf("%d compressed %s messages of %s, one at a time", len(payloads), opName(op), size(len(payloads[0])))
	if fragSize > 0 {
		desc += fmt.Sprintf(", in frames of %d octets", fragSize)
	}
	return step{desc: desc, run: func(s *session) {
		if s.pmd == nil {
			s.violate("the server declined the permessage-deflate offer")
			return
		}
		for _, p := range payloads {
			c := s.pmd.compress(p)
			n := fragSize
			if n == 0 {
				n = len(c)
			}
			fs := fragmentMessage(op, c, max(n, 1))
			fs[0].rsv = 4
			var b []byte
			for _, f := range fs {
				b = append(b, f.encode()...)
			}
			before := len(s.events)
			s.write(b)
			if !s.pump(time.Now().Add(replyTimeout), func() bool { return len(s.events) > before || s.gotClose }) {
				return
			}
			if s.gotClose || !s.events[len(s.events)-1].equal(event{kind: "message", payload: p, binary: op == opBinary}) {
				return
			}
		}
	}}
}

// The test data of 12.x and 13.x. Autobahn ships five files (Goethe's
// Faust, a bitmap, a PDF, a JSON and an HTML file); these are generated
// stand-ins of the same kinds, deterministic, 256 KiB each: what matters to
// the server is how well and how differently they compress.
type testData struct {
	desc   string
	binary bool
	data   []byte
}

const testDataSize = 256 << 10

func compressionTestData() []testData {
	r := rand.New(rand.NewPCG(7692, 1))
	return []testData{
		{"human-readable German text (sent as binary)", true, germanText(r)},
		{"a 512x512 greyscale bitmap", true, bitmap(r)},
		{"PDF-like: object syntax between incompressible streams", true, pdfLike(r)},
		{"JSON records", false, jsonRecords(r)},
		{"HTML markup", false, htmlPage(r)},
	}
}

var germanWords = strings.Fields(`Habe nun ach Philosophie Juristerei und Medizin
	und leider auch Theologie durchaus studiert mit heißem Bemühn Da steh ich nun
	ich armer Tor und bin so klug als wie zuvor heiße Magister heiße Doktor gar
	Nacht Geist Welt Natur Kraft Herz Faust Mephistopheles Gretchen Wagner Schüler
	über Straße Mädchen fröhlich schön Blüte Ärger Öl Übermut`)

func germanText(r *rand.Rand) []byte {
	var b bytes.Buffer
	for line := 0; b.Len() < testDataSize; line++ {
		if line%9 == 0 {
			b.WriteString("\nFAUST:\n")
		}
		for w := 0; w < 8+r.IntN(6); w++ {
			if w > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(germanWords[r.IntN(len(germanWords))])
		}
		b.WriteString([]string{".\n", ",\n", "!\n", "?\n"}[r.IntN(4)])
	}
	return b.Bytes()[:testDataSize]
}

func bitmap(r *rand.Rand) []byte {
	b := make([]byte, 0, testDataSize)
	b = append(b, "BM"...)
	for len(b) < 1078 { // header and palette
		b = append(b, byte(len(b)))
	}
	for y := 0; len(b) < testDataSize; y++ {
		for x := 0; x < 512 && len(b) < testDataSize; x++ {
			v := (x*x+y*y)/512 + (x^y)&7 + r.IntN(5)
			b = append(b, byte(v))
		}
	}
	return b
}

func pdfLike(r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	for obj := 1; b.Len() < testDataSize; obj++ {
		n := 256 + r.IntN(4096)
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n", obj, n)
		chunk := make([]byte, n)
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
		b.Write(chunk)
		b.WriteString("\nendstream\nendobj\n")
	}
	return b.Bytes()[:testDataSize]
}

func jsonRecords(r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString("[")
	for id := 0; b.Len() < testDataSize; id++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"sensor-%04d","room":"%s","value":%d.%02d,"ok":%t,"tags":["%s","%s"]},`+"\n",
			id, r.IntN(10000), []string{"lab", "hall", "roof", "cellar"}[r.IntN(4)],
			r.IntN(1000), r.IntN(100), r.IntN(2) == 0, germanASCII(r), germanASCII(r))
	}
	return b.Bytes()[:testDataSize]
}

func htmlPage(r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString("<!DOCTYPE html>\n<html><head><title>moonwire</title></head><body>\n")
	for i := 0; b.Len() < testDataSize; i++ {
		fmt.Fprintf(&b, "<div class=\"item item-%d\"><h2 id=\"h%d\">%s</h2><p>%s %s %s <a href=\"/page/%d\">%s</a></p></div>\n",
			i%7, i, germanASCII(r), germanASCII(r), germanASCII(r), germanASCII(r), r.IntN(1000), germanASCII(r))
	}
	return b.Bytes()[:testDataSize]
}

// germanASCII is a word of the list without its non-ASCII letters, for the
// text data sets (whose messages are cut at arbitrary bytes and must stay
// valid UTF-8).
func germanASCII(r *rand.Rand) string {
	return strings.Map(func(c rune) rune {
		if c > 127 {
			return 'e'
		}
		return c
	}, germanWords[r.IntN(len(germanWords))])
}

// messageSizes are Autobahn's MSG_SIZES: payload length and auto-fragment
// size (0: one frame). Autobahn sends 1000 messages of each; here the
// count is scaled to about 128 KiB a case (see messageCount).
var messageSizes = []struct{ size, frag int }{
	{16, 0}, {64, 0}, {256, 0}, {1024, 0}, {4096, 0}, {8192, 0}, {16384, 0}, {32768, 0}, {65536, 0}, {131072, 0},
	{8192, 256}, {16384, 256}, {32768, 256}, {65536, 256}, {131072, 256},
	{131072, 1024}, {131072, 4096}, {131072, 32768},
}

func messageCount(size int) int { return max(2, min(50, (128<<10)/size)) }

// payloadsOf cuts count messages of size bytes from data, each starting
// where the last ended and wrapping around, as Autobahn's sendOne does.
func payloadsOf(data []byte, size, count int) [][]byte {
	ps := make([][]byte, count)
	at := 0
	for i := range ps {
		p := make([]byte, 0, size)
		for len(p) < size {
			k := min(size-len(p), len(data)-at)
			p = append(p, data[at:at+k]...)
			at = (at + k) % len(data)
		}
		ps[i] = p
	}
	return ps
}

// The offers of 13.x: (client asks for server_no_context_takeover, for
// server_max_window_bits) as Autobahn's PerMessageDeflateOffer, which
// always also offers client_no_context_takeover and client_max_window_bits.
var deflateOffers = []string{
	"permessage-deflate; client_no_context_takeover; client_max_window_bits",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=15",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=15",
	"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8, " +
		"permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, " +
		"permessage-deflate; client_no_context_takeover; client_max_window_bits",
}

const rfcDeflate = "RFC 7692 §6, §7.2 (permessage-deflate)"

// 12.x: compressed round trips of five kinds of data with Autobahn's
// default offer; 13.x: of JSON under each of its seven offers.
func compressionCases() []Case {
	data := compressionTestData()
	build := func(id string, p profile, td testData) []Case {
		var cs []Case
		op := opText
		if td.binary {
			op = opBinary
		}
		for i, m := range messageSizes {
			ps := payloadsOf(td.data, m.size, messageCount(m.size))
			want := make([]event, len(ps))
			for j, pl := range ps {
				want[j] = event{kind: "message", payload: pl, binary: td.binary}
			}
			cs = append(cs, Case{
				ID: fmt.Sprintf("%s.%d", id, i+1), RFC: rfcDeflate, Profile: p,
				Desc:     fmt.Sprintf("%s; offer %q", td.desc, p.offer),
				Steps:    []step{compressedRoundTrips(op, ps, m.frag)},
				Outcomes: ok(want...), Close: normalClose,
			})
		}
		return cs
	}
	var cs []Case
	for j, td := range data {
		p := profile{name: "deflate", compression: true, offer: deflateOffers[0]}
		cs = append(cs, build(fmt.Sprintf("12.%d", j+1), p, td)...)
	}
	for j, offer := range deflateOffers {
		p := profile{name: "deflate", compression: true, offer: offer}
		cs = append(cs, build(fmt.Sprintf("13.%d", j+1), p, data[3])...)
	}
	return cs
}

// TestDeflateClient checks the grading client's own permessage-deflate:
// the answers it refuses, and a round trip through its compressor and
// inflater with and without context takeover.
func TestDeflateClient(t *testing.T) {
	t.Parallel()
	const offer = "permessage-deflate; client_no_context_takeover; client_max_window_bits"
	for _, c := range []struct {
		offer, answer string
		ok            bool
	}{
		{offer, "permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{offer, "permessage-deflate", true},
		{offer, "permessage-deflate; client_max_window_bits=15", true},
		{"permessage-deflate", "permessage-deflate; client_max_window_bits=15", false},
		{offer, "permessage-deflate; client_max_window_bits=10", false},
		{offer, "x-webkit-deflate-frame", false},
		{offer, "permessage-deflate, permessage-deflate", false},
		{offer, "permessage-deflate; server_no_context_takeover; server_no_context_takeover", false},
		{offer, "permessage-deflate; server_no_context_takeover=1", false},
		{offer, "permessage-deflate; server_max_window_bits=7", false},
		{offer, "permessage-deflate; mystery", false},
		{deflateOffers[1], "permessage-deflate", false},
		{deflateOffers[2], "permessage-deflate; server_max_window_bits=8", true},
		{deflateOffers[2], "permessage-deflate; server_max_window_bits=9", false},
		{deflateOffers[2], "permessage-deflate", false},
		{deflateOffers[6], "permessage-deflate", true},
	} {
		_, err := acceptDeflate(c.offer, c.answer)
		if (err == nil) != c.ok {
			t.Errorf("offer %q, answer %q: err = %v, want ok=%v", c.offer, c.answer, err, c.ok)
		}
	}
	msgs := payloadsOf(compressionTestData()[3].data, 5000, 4)
	for _, noContext := range []bool{true, false} {
		sender := &pmdState{clientNoContext: noContext}
		receiver := &pmdState{serverNoContext: noContext}
		for i, m := range msgs {
			got, err := receiver.inflate(sender.compress(m))
			if err != nil || !bytes.Equal(got, m) {
				t.Fatalf("no context takeover %v, message %d: %v", noContext, i, err)
			}
		}
	}
	if _, err := (&pmdState{serverNoContext: true}).inflate([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("garbage inflated")
	}
}
