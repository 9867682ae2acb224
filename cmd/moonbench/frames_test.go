//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

// readFrame reads one frame with gobwas's header reader.
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	p := make([]byte, h.Length)
	_, err = io.ReadFull(r, p)
	return ws.Frame{Header: h, Payload: p}, err
}

// The pre-encoded frame must be what gobwas itself reads as a masked binary
// frame, with the stamps in place.
func TestTemplateFrame(t *testing.T) {
	t.Parallel()
	for _, size := range []int{16, 125, 126, 300, 70000} {
		tm := newTemplate(padding(size, 16))
		b := tm.appendStamped(nil, 123456789, 7, 42)
		f, err := readFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !f.Header.Masked || !f.Header.Fin || f.Header.OpCode != ws.OpBinary || int(f.Header.Length) != size {
			t.Fatalf("size %d: header %+v", size, f.Header)
		}
		p := ws.UnmaskFrame(f).Payload
		if binary.LittleEndian.Uint64(p) != 123456789 || binary.LittleEndian.Uint32(p[8:]) != 7 || binary.LittleEndian.Uint32(p[12:]) != 42 {
			t.Fatalf("size %d: stamps %x", size, p[:16])
		}
		if !bytes.Equal(p[16:], tm.payload[16:]) {
			t.Fatalf("size %d: padding differs", size)
		}
		h, ok := parseHeader(b)
		if !ok || !h.masked || h.length != int64(size) || h.hdrLen != tm.hdrLen {
			t.Fatalf("size %d: parseHeader %+v %v", size, h, ok)
		}
		if _, ok := parseHeader(b[:h.hdrLen-1]); ok {
			t.Fatalf("size %d: a truncated header parsed", size)
		}
	}
}

func TestControlFrames(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	b := appendControl(nil, ws.OpPong, []byte("hi"), key)
	b = appendClose(b, ws.StatusNormalClosure, key)
	r := bytes.NewReader(b)
	f, err := readFrame(r)
	if err != nil || f.Header.OpCode != ws.OpPong || string(ws.UnmaskFrame(f).Payload) != "hi" {
		t.Fatalf("pong: %+v %v", f, err)
	}
	f, err = readFrame(r)
	if err != nil || f.Header.OpCode != ws.OpClose {
		t.Fatalf("close: %+v %v", f, err)
	}
	if code, _ := ws.ParseCloseFrameData(ws.UnmaskFrame(f).Payload); code != ws.StatusNormalClosure {
		t.Fatalf("close code %d", code)
	}
}

// Sending and checking a message allocates nothing.
func TestMessagePathAllocs(t *testing.T) {
	tm := newTemplate(padding(64, 16))
	buf := make([]byte, 0, 4096)
	var h hist
	allocs := testing.AllocsPerRun(1000, func() {
		buf = tm.appendStamped(buf[:0], nowNs(), 1, 2)
		hd, _ := parseHeader(buf)
		p := buf[hd.hdrLen:]
		ws.Cipher(p, hd.mask, 0)
		if !bytes.Equal(p[16:], tm.payload[16:]) {
			t.Fatal("padding")
		}
		h.add(nowNs() - int64(binary.LittleEndian.Uint64(p)))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message, want 0", allocs)
	}
}
