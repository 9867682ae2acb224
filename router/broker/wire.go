package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire form of a Message, shared by the network brokers so that nodes
// built with different transports still agree on what a message is:
//
//	version(1) op(1) flags(1) code(uvarint) offset(uvarint)
//	origin room target except to reason epoch (each uvarint length + bytes)
//	data (the rest)
//
// A version other than wireVersion is refused rather than guessed at, so
// that a rolling upgrade to a new format fails loudly on the old nodes.
const wireVersion = 1

const flagBinary = 1

// maxWireField bounds every string field of a decoded message: ids and
// room names are short, and a peer that claims a longer one is broken.
const maxWireField = 1 << 16

// ErrWire is wrapped by Decode's errors.
var ErrWire = errors.New("broker: malformed message")

// AppendWire appends the wire form of m to dst and returns the result.
func AppendWire(dst []byte, m *Message) []byte {
	dst = AppendWireHead(dst, m)
	dst = binary.AppendUvarint(dst, m.Offset)
	dst = AppendWireFields(dst, m)
	dst = binary.AppendUvarint(dst, uint64(len(m.Epoch)))
	dst = append(dst, m.Epoch...)
	return append(dst, m.Data...)
}

// AppendWireHead appends what precedes the offset in m's wire form, and
// AppendWireFields what lies between the offset and the epoch: a broker
// that assigns the offset and epoch elsewhere (the Redis history script)
// puts the message together around them.
func AppendWireHead(dst []byte, m *Message) []byte {
	var flags byte
	if m.Binary {
		flags |= flagBinary
	}
	dst = append(dst, wireVersion, byte(m.Op), flags)
	return binary.AppendUvarint(dst, uint64(m.Code))
}

// AppendWireFields: see AppendWireHead.
func AppendWireFields(dst []byte, m *Message) []byte {
	for _, s := range [...]string{m.Origin, m.Room, m.Target, m.Except, m.To, m.Reason} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// DecodeWire parses a message in wire form. The returned Data aliases b.
func DecodeWire(b []byte) (Message, error) {
	var m Message
	if len(b) < 3 {
		return m, fmt.Errorf("%w: %d bytes", ErrWire, len(b))
	}
	if b[0] != wireVersion {
		return m, fmt.Errorf("%w: version %d, this node speaks %d", ErrWire, b[0], wireVersion)
	}
	m.Op, m.Binary = Op(b[1]), b[2]&flagBinary != 0
	if m.Op < OpBroadcast || m.Op > OpClose {
		return m, fmt.Errorf("%w: op %d", ErrWire, b[1])
	}
	b = b[3:]
	code, n := binary.Uvarint(b)
	if n <= 0 || code > 4999 {
		return m, fmt.Errorf("%w: close code", ErrWire)
	}
	m.Code, b = int(code), b[n:]
	if m.Offset, n = binary.Uvarint(b); n <= 0 {
		return m, fmt.Errorf("%w: offset", ErrWire)
	}
	b = b[n:]
	for _, f := range [...]*string{&m.Origin, &m.Room, &m.Target, &m.Except, &m.To, &m.Reason, &m.Epoch} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > maxWireField || l > uint64(len(b)-n) {
			return m, fmt.Errorf("%w: field length", ErrWire)
		}
		*f, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	m.Data = b
	return m, nil
}
