package router_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// TestFlushWorkersWriteEveryReadyConnection: one flush worker writes a
// room's broadcasts to every member, with the members ready together (on
// Linux, on an io_uring, one system call for many sockets; and with
// Config.NoRing, a call each). One member does not read at first: its
// socket fills in the middle of the batches, its flush goes on a
// goroutine of its own, and once it reads, it gets every message, in
// order, as the others did. Then every member closes and gets its close
// reply.
func TestFlushWorkersWriteEveryReadyConnection(t *testing.T) {
	t.Parallel()
	for _, noRing := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoRing=%v", noRing), func(t *testing.T) {
			t.Parallel()
			const (
				readers  = 8
				messages = 300
				size     = 16 << 10
			)
			h := &openJoiner{opened: make(chan *router.Conn, readers+1)}
			srv, addr := serve(t, router.Config{
				Routes:     []router.RouteSpec{{Pattern: "/room", Handler: h}},
				Workers:    1,
				NoRing:     noRing,
				WriteQueue: messages * (size + 16),
				// The stalled member's flush waits while the readers read
				// 40 MB: generous, for a loaded machine.
				WriteTimeout: 3 * moontest.Timeout,
			})
			t.Cleanup(func() { _ = srv.Close() })
			var clients []*moontest.Client
			var stalledConn *router.Conn
			for range readers + 1 {
				clients = append(clients, moontest.Dial(t, "ws://"+addr+"/room"))
				select {
				case stalledConn = <-h.opened: // the last one is the stalled member's
				case <-time.After(moontest.Timeout):
					t.Fatal("the connection never opened")
				}
			}
			stalled := clients[readers]
			_ = stalled.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)

			// read checks that c gets the broadcasts, numbered, in order.
			read := func(c *moontest.Client) error {
				for i := range messages {
					f, err := c.ReadFrame(0)
					if err != nil {
						return fmt.Errorf("message %d: %w", i, err)
					}
					if f.Op != ws.OpBinary || len(f.Payload) != size || binary.BigEndian.Uint32(f.Payload) != uint32(i) {
						return fmt.Errorf("message %d: op %v, %d bytes, number %d", i, f.Op, len(f.Payload), binary.BigEndian.Uint32(f.Payload))
					}
				}
				return nil
			}
			errs := make(chan error, readers)
			var wg sync.WaitGroup
			for _, c := range clients[:readers] {
				wg.Go(func() { errs <- read(c) })
			}
			msg := make([]byte, size)
			for i := range messages {
				binary.BigEndian.PutUint32(msg, uint32(i))
				if n := srv.Broadcast("r", router.Binary, msg, nil); n != readers+1 {
					t.Fatalf("broadcast %d reached %d members, want %d", i, n, readers+1)
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			// The stalled member's socket filled: its flush waits on a
			// goroutine of its own, and the worker served the rest.
			moontest.WaitFor(t, "the stalled member's flush to wait", func() bool {
				return router.FlushWaiting(stalledConn)
			})
			if err := read(stalled); err != nil {
				t.Fatalf("the member that read late: %v", err)
			}
			for _, c := range clients {
				c.Close(1000)
			}
			moontest.WaitFor(t, "every connection to end", func() bool { return srv.Stats().Connections == 0 })
		})
	}
}

// openJoiner puts every connection in room "r" and hands it out once
// it is there.
type openJoiner struct {
	goEcho
	opened chan *router.Conn
}

func (j *openJoiner) Open(_ int, c *router.Conn) {
	_ = c.Join("r")
	j.opened <- c
}
