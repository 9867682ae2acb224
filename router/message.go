package router

import (
	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/wsconn"
)

// outMsg is one outgoing data message and the frames it is encoded into:
// plain, and compressed for connections that negotiated permessage-deflate.
// Each variant is encoded at most once however many connections receive
// it, and only if one of them needs it.
type outMsg struct {
	op       ws.OpCode
	b        []byte // the payload, as bytes or as a string
	s        string
	plain    *wsconn.Frame
	deflated *wsconn.Frame
}

func newOutMsg(kind Kind, b []byte, s string) outMsg {
	return outMsg{op: opcode(kind), b: b, s: s}
}

func (m *outMsg) len() int { return len(m.b) + len(m.s) }

// frameFor returns the frame c should receive. The message keeps the
// reference; release drops it.
func (m *outMsg) frameFor(c *Conn) *wsconn.Frame {
	if c.deflate.Compress && wsconn.ShouldCompress(m.len()) {
		if m.deflated == nil {
			m.deflated = wsconn.NewDeflatedFrame(m.op, m.b, m.s)
		}
		return m.deflated
	}
	if m.plain == nil {
		if m.b != nil {
			m.plain = wsconn.NewFrame(m.op, m.b)
		} else {
			m.plain = wsconn.NewFrameString(m.op, m.s)
		}
	}
	return m.plain
}

// release drops the message's references to its frames; queues that took
// them keep their own.
func (m *outMsg) release() {
	if m.plain != nil {
		m.plain.Release()
	}
	if m.deflated != nil {
		m.deflated.Release()
	}
}
