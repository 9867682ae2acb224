// Package baseline is the comparison server for moonbench: the plain
// gobwas/ws server a developer writes from the library's README, with no
// router, no scripts and no tuning.
//
// What it does, exactly:
//
//   - Accept: one net.Listener, one accept loop, one goroutine per accepted
//     connection for that connection's whole life. No limits, no timeouts,
//     no deadlines.
//   - Handshake: ws.Upgrade(conn) on the raw net.Conn (gobwas's zero-copy
//     upgrade, its pooled 4 KiB read buffer). Any request path is accepted
//     and there is no authentication: for the handshake scenario it is the
//     plain upgrade moonwire's Lua token check is compared against.
//   - Echo (KindEcho): a loop of wsutil.ReadClientData(conn) then
//     wsutil.WriteServerMessage(conn, op, msg), the reply having the same
//     opcode. wsutil answers pings with pongs and close frames with a close
//     reply; any read or write error ends the loop and closes the socket.
//     Reading the raw conn costs a read(2) per frame header part and per
//     payload, and WriteServerMessage writes the header and the payload
//     with two write(2) calls: that is what the README idiom does.
//   - Chat (KindChat): the same read loop; the connection is added to a
//     set (a map guarded by a sync.RWMutex) after the upgrade and removed
//     when its loop ends. On each message the reader takes the read lock and
//     loops over the set, writing the message to every other connection with
//     wsutil.WriteServerMessage under that connection's own sync.Mutex (so
//     concurrent broadcasts never interleave frames on one socket). The
//     writes happen in the sender's goroutine, one recipient after the
//     other, with no queue and no write deadline: a slow recipient slows the
//     sender's broadcast down, and a write error to a recipient is ignored
//     (its own read loop notices the broken connection and removes it).
//   - Heartbeats: none. The server answers the client's pings; it never
//     sends its own (the idle scenario then measures held connections and
//     memory only).
//
// Options.Buffered is the variant a developer who cares about syscalls
// writes: a bufio.Reader (4 KiB) under wsutil.ReadClientData and a
// bufio.Writer (4 KiB) flushed after every message, so a small message costs
// one write(2) per recipient instead of two. It is off by default.
package baseline

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Kind selects what the server does with messages.
type Kind string

// The kinds of baseline server.
const (
	KindEcho Kind = "echo" // every message back to its sender
	KindChat Kind = "chat" // every message to every other connection
)

// ParseKind checks a kind given on a command line.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case KindEcho, KindChat:
		return Kind(s), nil
	}
	return "", fmt.Errorf("unknown baseline kind %q (want echo or chat)", s)
}

// Options configure a Server.
type Options struct {
	// Buffered wraps each connection in a bufio.Reader and a bufio.Writer
	// flushed after every message (see the package documentation).
	Buffered bool
}

// Server is a baseline WebSocket server. Create it with New, start it with
// Serve and stop it with Close.
type Server struct {
	kind Kind
	opts Options

	mu    sync.RWMutex // guards peers (chat) and closed/ln
	peers map[*peer]struct{}
	ln    net.Listener
	conns map[net.Conn]struct{}
	done  bool

	wg sync.WaitGroup
}

// peer is one chat connection: its writer and the mutex that serialises
// writes to it.
type peer struct {
	wmu sync.Mutex
	w   io.Writer
	bw  *bufio.Writer // nil unless Buffered
}

// New returns a server of the given kind.
func New(kind Kind, opts Options) *Server {
	return &Server{
		kind:  kind,
		opts:  opts,
		peers: make(map[*peer]struct{}),
		conns: make(map[net.Conn]struct{}),
	}
}

// Listen starts a server of the given kind on addr (e.g. "127.0.0.1:0") and
// serves it in the background. Stop it with Close.
func Listen(addr string, kind Kind, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := New(kind, opts)
	go func() { _ = s.Serve(ln) }()
	return s, nil
}

// Addr is the listening address once Serve has been called (nil before).
func (s *Server) Addr() net.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve accepts connections on ln until Close, one goroutine each. It
// returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.RLock()
			done := s.done
			s.mu.RUnlock()
			if done {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and friends: wait a little and keep accepting, as
			// net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			_ = conn.Close()
			continue
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(conn)
	}
}

// Close stops accepting, closes every connection and waits for their
// goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.done = true
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// rw is the io.ReadWriter wsutil reads from and writes to.
type rw struct {
	io.Reader
	io.Writer
}

func (s *Server) handle(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		_ = conn.Close()
	}()
	if _, err := ws.Upgrade(conn); err != nil {
		return
	}
	var (
		src io.ReadWriter = conn
		bw  *bufio.Writer
	)
	if s.opts.Buffered {
		bw = bufio.NewWriter(conn)
		src = rw{Reader: bufio.NewReader(conn), Writer: bw}
	}
	switch s.kind {
	case KindChat:
		s.chat(src, bw)
	default:
		echo(src, bw)
	}
}

// echo is the README loop: read a message, write it back.
func echo(conn io.ReadWriter, bw *bufio.Writer) {
	for {
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
			return
		}
		if bw != nil {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// chat joins the connection to the set and relays each of its messages to
// every other member.
func (s *Server) chat(conn io.ReadWriter, bw *bufio.Writer) {
	me := &peer{w: conn, bw: bw}
	s.mu.Lock()
	s.peers[me] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.peers, me)
		s.mu.Unlock()
	}()
	for {
		// wsutil writes pongs and the close reply to conn from this
		// goroutine: take our own write lock around the read so that they
		// cannot interleave with a broadcast being written to us.
		msg, op, err := readLocked(me, conn)
		if err != nil {
			return
		}
		s.mu.RLock()
		for p := range s.peers {
			if p == me {
				continue
			}
			p.wmu.Lock()
			err := wsutil.WriteServerMessage(p.w, op, msg)
			if err == nil && p.bw != nil {
				err = p.bw.Flush()
			}
			p.wmu.Unlock()
			_ = err // the recipient's own read loop sees the broken connection
		}
		s.mu.RUnlock()
	}
}

// readLocked reads the next data message; control frame replies that wsutil
// writes while doing so go through a writer that takes the peer's write
// mutex, so they cannot interleave with broadcasts written to this peer.
func readLocked(me *peer, conn io.ReadWriter) ([]byte, ws.OpCode, error) {
	return wsutil.ReadClientData(rw{Reader: conn, Writer: lockedWriter{me}})
}

// lockedWriter writes to a peer under its write mutex.
type lockedWriter struct{ p *peer }

func (l lockedWriter) Write(b []byte) (int, error) {
	l.p.wmu.Lock()
	defer l.p.wmu.Unlock()
	n, err := l.p.w.Write(b)
	if err == nil && l.p.bw != nil {
		err = l.p.bw.Flush()
	}
	return n, err
}
