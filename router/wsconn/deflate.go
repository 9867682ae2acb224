package wsconn

import (
	"compress/flate"
	"errors"
	"io"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// permessage-deflate (RFC 7692), the way a server with many connections and
// shared broadcasts wants it: every message is compressed on its own.
//
// The server always answers with server_no_context_takeover (it may, §7.1.1.1)
// so one compressed frame can go to every recipient of a broadcast, and with
// client_no_context_takeover (§7.1.1.2) so that no connection keeps a 32 KiB
// inflate window between messages: an idle compressed connection costs what
// an idle plain one does.

// Deflate is what a connection negotiated.
type Deflate struct {
	// Enabled: the client's messages may be compressed (RSV1), and the
	// server may compress its own.
	Enabled bool
	// Compress: the server compresses what it sends. Off when the client
	// asked for a server window smaller than the 32 KiB compress/flate
	// always uses; its messages are then sent uncompressed, which
	// permessage-deflate allows message by message.
	Compress bool
}

// NegotiateDeflate answers one offer from a Sec-WebSocket-Extensions
// header. It returns the response option and the outcome, or ok == false to
// decline the offer (another one, or none, may be accepted).
func NegotiateDeflate(offer httphead.Option) (resp httphead.Option, d Deflate, ok bool) {
	if string(offer.Name) != wsflate.ExtensionName {
		return resp, d, false
	}
	var p wsflate.Parameters
	if err := p.Parse(offer); err != nil {
		// Unknown or malformed parameters: decline this offer (§5).
		return resp, d, false
	}
	// client_max_window_bits without a value parses as 1; only 8..15 (or
	// absent) are meaningful, and any of them is fine for inflating.
	if b := p.ClientMaxWindowBits; b > 1 && (b < 8 || b > 15) {
		return resp, d, false
	}
	r := wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	d = Deflate{Enabled: true, Compress: true}
	if b := p.ServerMaxWindowBits; b.Defined() {
		r.ServerMaxWindowBits = b
		d.Compress = b == 15
	}
	return r.Option(), d, true
}

// compressMin is the smallest payload worth compressing: below it the
// deflate block overhead eats the gain.
const compressMin = 128

// ShouldCompress reports whether a payload of n bytes is worth compressing.
func ShouldCompress(n int) bool { return n >= compressMin }

var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// writers recycles flate writers; each is large (hundreds of KiB), so they
// are shared by every connection rather than kept per connection.
var writers = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// sliceWriter appends to a byte slice without allocating a buffer type.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	if need := len(w.b) + len(p); need > cap(w.b) {
		grown := bufpool.Get(max(need, 2*cap(w.b)))[:len(w.b)]
		copy(grown, w.b)
		bufpool.Put(w.b)
		w.b = grown
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

var sliceWriters = sync.Pool{New: func() any { return new(sliceWriter) }}

// NewDeflatedFrame encodes a compressed message (RSV1 set) holding payload
// (given as pb or ps). Like NewFrame it holds one reference for the caller.
func NewDeflatedFrame(op ws.OpCode, pb []byte, ps string) *Frame {
	fw := writers.Get().(*flate.Writer)
	sw := sliceWriters.Get().(*sliceWriter)
	n := len(pb) + len(ps)
	sw.b = bufpool.Get(10 + n/2 + 64)[:10] // room for the largest header
	fw.Reset(sw)
	if ps != "" {
		_, _ = io.WriteString(fw, ps)
	} else {
		_, _ = fw.Write(pb)
	}
	_ = fw.Flush()
	writers.Put(fw)
	body := sw.b[10:]
	// RFC 7692 §7.2.1: remove the 0x00 0x00 0xff 0xff a sync flush ends with.
	if l := len(body); l >= 4 && string(body[l-4:]) == string(deflateTail) {
		body = body[:l-4]
	}
	hl := headerLen(len(body))
	f := framePool.Get().(*Frame)
	if need := hl + len(body); cap(sw.b) > 2*max(need, 512) {
		// The guess was far too large (the payload compressed well): a
		// queued frame is charged for its length, so it must not pin a
		// buffer many times that size. A peer echoing 1 KiB frames that
		// inflate to 1 MiB would otherwise hold 512 KiB per queued frame.
		b := bufpool.Get(need)
		copy(b[hl:], body)
		bufpool.Put(sw.b)
		f.b, f.base = b, nil
	} else {
		f.b = sw.b[10-hl : 10+len(body)]
		f.base = sw.b
	}
	putHeader(f.b, op, len(body))
	f.b[0] |= 0x40 // RSV1: this message is compressed
	sw.b = nil
	sliceWriters.Put(sw)
	f.refs = 1
	return f
}

// readers recycles flate readers (and the input they read).
var readers = sync.Pool{New: func() any {
	in := &inflateInput{}
	return &inflater{in: in, r: flate.NewReader(in)}
}}

type inflater struct {
	in *inflateInput
	r  io.ReadCloser
}

// inflateInput reads the compressed payload, then the tail that RFC 7692
// §7.2.2 says to append before inflating.
type inflateInput struct {
	p    []byte
	tail []byte
}

func (in *inflateInput) Read(b []byte) (int, error) {
	if len(in.p) > 0 {
		n := copy(b, in.p)
		in.p = in.p[n:]
		return n, nil
	}
	if len(in.tail) > 0 {
		n := copy(b, in.tail)
		in.tail = in.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

var errTooBig = errors.New("inflated message too big")

// inflate decompresses one message into a pooled buffer, stopping as soon
// as the output would pass limit: a compression bomb costs at most limit
// bytes. The caller owns the result (bufpool.Put).
func inflate(compressed []byte, limit int64) ([]byte, error) {
	inf := readers.Get().(*inflater)
	defer readers.Put(inf)
	inf.in.p, inf.in.tail = compressed, deflateTail
	if err := inf.r.(flate.Resetter).Reset(inf.in, nil); err != nil {
		return nil, err
	}
	out := bufpool.Get(int(min(max(int64(len(compressed))*4, 512), limit+1)))[:0]
	for {
		if len(out) == cap(out) {
			if int64(len(out)) > limit {
				bufpool.Put(out)
				return nil, errTooBig
			}
			grown := bufpool.Get(int(min(int64(2*cap(out)), limit+1)))[:len(out)]
			copy(grown, out)
			bufpool.Put(out)
			out = grown
		}
		n, err := inf.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if int64(len(out)) > limit {
			bufpool.Put(out)
			return nil, errTooBig
		}
		switch {
		case err == io.EOF || (err == io.ErrUnexpectedEOF && len(inf.in.p) == 0 && len(inf.in.tail) == 0):
			// The stream ends at our tail without a final block, as
			// permessage-deflate messages do.
			return out, nil
		case err != nil:
			bufpool.Put(out)
			return nil, err
		}
	}
}
