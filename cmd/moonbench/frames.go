//go:build linux

package main

import (
	"bytes"
	"encoding/binary"

	"github.com/gobwas/ws"
)

// The payload of every data message moonbench sends:
//
//	[0:8]   send time, nanoseconds since the process started (little endian)
//	[8:12]  broadcast: publisher index (little endian); echo: padding
//	[12:16] broadcast: sequence number from 1 (little endian); echo: padding
//	[16:]   padding: 'a'..'z' repeated, by position
//
// Echo verifies every byte of a reply; broadcast verifies the padding and
// counts each publisher's sequence numbers per subscriber.
const (
	minEchoSize      = 8
	minBroadcastSize = 16
)

// padding returns the payload template of size n: zeros where the stamps go
// (set per message), padding everywhere else.
func padding(n, stamped int) []byte {
	p := make([]byte, n)
	for i := stamped; i < n; i++ {
		p[i] = byte('a' + i%26)
	}
	return p
}

// template is a pre-encoded, pre-masked binary frame: sending a message is a
// copy of the template and an XOR of its stamped bytes.
type template struct {
	frame   []byte  // header + masked payload (stamped bytes masked zeros)
	hdrLen  int     // offset of the payload in frame
	mask    [4]byte // the masking key, the same for every frame of a run
	payload []byte  // the unmasked payload with zeroed stamps, for checks
}

// newTemplate encodes a masked binary frame of the given payload. The key is
// chosen once per run: a server cannot tell, and unmasking costs it the same.
func newTemplate(payload []byte) *template {
	mask := ws.NewMask()
	if mask == [4]byte{} {
		mask = [4]byte{0x5a, 0xa5, 0x3c, 0xc3}
	}
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: mask, Length: int64(len(payload))}
	var b bytes.Buffer
	b.Grow(ws.HeaderSize(h) + len(payload))
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err) // writing to a bytes.Buffer cannot fail
	}
	hl := b.Len()
	b.Write(payload)
	frame := b.Bytes()
	ws.Cipher(frame[hl:], mask, 0)
	return &template{frame: frame, hdrLen: hl, mask: mask, payload: payload}
}

// appendStamped appends the frame to dst with the payload's first 8 bytes
// set to ts and, when seq != 0, bytes 8..16 set to pub and seq.
func (t *template) appendStamped(dst []byte, ts int64, pub, seq uint32) []byte {
	off := len(dst)
	dst = append(dst, t.frame...)
	p := dst[off+t.hdrLen:]
	var st [16]byte
	binary.LittleEndian.PutUint64(st[0:8], uint64(ts))
	n := 8
	if seq != 0 {
		binary.LittleEndian.PutUint32(st[8:12], pub)
		binary.LittleEndian.PutUint32(st[12:16], seq)
		n = 16
	}
	for i := 0; i < n; i++ {
		p[i] = st[i] ^ t.mask[i&3]
	}
	return dst
}

// appendControl appends a masked control frame (ping, pong, close) with the
// given payload (at most 125 bytes) masked with key.
func appendControl(dst []byte, op ws.OpCode, payload []byte, key [4]byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	dst = append(dst, 0x80|byte(op), 0x80|byte(len(payload)), key[0], key[1], key[2], key[3])
	off := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[off:], key, 0)
	return dst
}

// appendClose appends a masked close frame with the status code.
func appendClose(dst []byte, code ws.StatusCode, key [4]byte) []byte {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(code))
	return appendControl(dst, ws.OpClose, b[:], key)
}

// frameHeader is a decoded server frame header.
type frameHeader struct {
	fin    bool
	rsv    byte
	op     ws.OpCode
	masked bool
	mask   [4]byte
	hdrLen int
	length int64
}

// parseHeader decodes the frame header at the start of b. ok is false when
// b does not hold the whole header yet.
func parseHeader(b []byte) (h frameHeader, ok bool) {
	if len(b) < 2 {
		return h, false
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, false
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, false
		}
		h.length = int64(binary.BigEndian.Uint64(b[2:10]) & (1<<63 - 1))
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, false
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.hdrLen = n
	return h, true
}
