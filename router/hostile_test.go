package router_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestHostileClientsLeaveOthersServed throws garbage, floods, aborted
// frames, aborted handshakes and clients that never read at a running
// server, while one well-behaved client keeps doing round trips. Every
// round trip must succeed, and when the storm is over the server's
// connections and goroutines must return to where they were. Not
// parallel: the goroutine count is the process's, and a parallel test
// that starts goroutines after the baseline (a CI run saw one) reads as a
// leak here.
func TestHostileClientsLeaveOthersServed(t *testing.T) {
	s := startEcho(t, `
[server]
max_message_size = "64KiB"
write_queue = "64KiB"
handshake_timeout = "500ms"
write_timeout = "500ms"
`)
	good := moontest.Dial(t, s.URL("/echo"))
	good.Send("warm up")
	good.Expect("warm up")
	moontest.WaitFor(t, "the server to settle", func() bool { return s.Router.Stats().Connections == 1 })
	baseline := runtime.NumGoroutine()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < 40; i++ {
				select {
				case <-stop:
					return
				default:
				}
				hostile(t, s, rng)
			}
		}()
	}

	rounds := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		msg := fmt.Sprint("round ", rounds)
		good.Send(msg)
		good.Expect(msg)
		rounds++
	}
	close(stop)
	t.Logf("%d round trips during the storm", rounds)

	moontest.WaitFor(t, "hostile connections to be gone", func() bool {
		return s.Router.Stats().Connections == 1
	})
	deadline := time.Now().Add(moontest.Timeout)
	for runtime.NumGoroutine() > baseline+2 {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("goroutines: %d, baseline %d; they are:\n%s", runtime.NumGoroutine(), baseline, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	good.Send("after")
	good.Expect("after")
}

// hostile opens one connection and misbehaves in one of several ways.
func hostile(t *testing.T, s *moontest.Server, rng *rand.Rand) {
	switch rng.IntN(7) {
	case 0: // garbage instead of a handshake
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			return
		}
		b := make([]byte, rng.IntN(2000))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, _ = nc.Write(b)
		nc.Close()
	case 1: // half a handshake, then gone
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			return
		}
		_, _ = nc.Write([]byte("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"))
		nc.Close()
	default:
		c, err := moontest.TryDial(t, s.URL("/echo"))
		if err != nil {
			return
		}
		defer c.Conn.Close()
		switch rng.IntN(5) {
		case 0: // garbage frames
			b := make([]byte, 1+rng.IntN(500))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			_ = c.WriteRaw(b)
		case 1: // a frame cut off mid-payload
			var b bytes.Buffer
			f := ws.MaskFrameInPlace(ws.NewBinaryFrame(make([]byte, 1000)))
			_ = ws.WriteFrame(&b, f)
			_ = c.WriteRaw(b.Bytes()[:1+rng.IntN(b.Len()-1)])
		case 2: // flood and never read: a slow consumer
			_ = c.Conn.(*net.TCPConn).SetReadBuffer(1024)
			p := make([]byte, 8000)
			for range 200 {
				if c.WriteFrame(ws.OpBinary, true, p) != nil {
					break
				}
			}
		case 3: // ping flood
			for range 200 {
				if c.WriteFrame(ws.OpPing, true, []byte("p")) != nil {
					break
				}
			}
		case 4: // a frame larger than the limit
			var b bytes.Buffer
			_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: 1 << 20})
			_ = c.WriteRaw(b.Bytes())
			_, _ = c.ReadFrame(time.Second)
		}
	}
}

// TestHandshakeFlood: thousands of clients that connect and say nothing,
// and hundreds that send their request a byte at a time, while a normal
// client keeps connecting and doing round trips. Every one of them is cut
// off at the handshake timeout.
func TestHandshakeFlood(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "[server]\nhandshake_timeout = \"500ms\"\n")
	const silent, trickling = 2000, 200
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range silent {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, nc)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range trickling {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, nc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
			for j := i; ; j++ {
				if _, err := nc.Write([]byte{req[j%len(req)]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	// Normal clients are served throughout.
	for i := range 20 {
		c := moontest.Dial(t, s.URL("/echo"))
		msg := fmt.Sprint("served ", i)
		c.Send(msg)
		c.Expect(msg)
		c.Close(1000)
	}
	// Every flooding connection is closed by the server.
	buf := make([]byte, 64)
	for i, nc := range conns {
		_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
		for {
			_, err := nc.Read(buf)
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("flooding connection %d was not cut off", i)
			}
			break
		}
	}
	close(stop)
	wg.Wait()
}
