package router_test

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// BenchmarkIdleFootprint measures what an idle connection costs the
// server's heap: connections opened to scripts/echo.lua and left idle,
// then the live heap allocated on the server's side of them (every
// allocation whose stack passes through the accept or the upgrade),
// divided by their number. The clients are raw sockets in this process;
// their own allocations are not counted. Reported as B/conn, with the
// allocation sites in the log (-v).
//
//	go test -run='^$' -bench=IdleFootprint -benchtime=1x -v ./router/
func BenchmarkIdleFootprint(b *testing.B) {
	const conns = 2000
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()

	s := moontest.Start(b, moontest.Files("[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n", "scripts/echo.lua", echoScript))
	for b.Loop() {
		clients := make([]net.Conn, 0, conns)
		resp := make([]byte, 1024)
		for range conns {
			c, err := net.Dial("tcp", s.Addr())
			if err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
			req := "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			if _, err := io.WriteString(c, req); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(resp); err != nil || !strings.HasPrefix(string(resp[:n]), "HTTP/1.1 101 ") {
				b.Fatalf("upgrade: %q %v", resp[:n], err)
			}
		}
		moontest.WaitFor(b, "every connection open", func() bool { return s.Router.Stats().Connections == conns })

		b.StopTimer()
		runtime.GC()
		runtime.GC() // the profile is of the last completed cycle
		perConn, sites := serverHeap(conns)
		b.ReportMetric(perConn, "B/conn")
		for _, st := range sites {
			b.Logf("%8.0f B/conn  %s", st.perConn, st.where)
		}
		for _, c := range clients {
			_ = c.Close()
		}
		moontest.WaitFor(b, "every connection closed", func() bool { return s.Router.Stats().Connections == 0 })
		b.StartTimer()
	}
}

type heapSite struct {
	where   string
	perConn float64
}

// serverHeap sums the live heap allocated on the server's side of the
// connections (stacks through the accept or the handshake goroutine),
// per connection, with the top allocation sites.
func serverHeap(conns int) (float64, []heapSite) {
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	bySite := map[string]int64{}
	var total int64
	for _, r := range recs {
		live := r.InUseBytes()
		if live == 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		server, site := false, ""
		for {
			f, more := frames.Next()
			fn := f.Function
			if site == "" && !strings.HasPrefix(fn, "runtime.") {
				site = fmt.Sprintf("%s:%d", fn, f.Line)
			}
			if strings.Contains(fn, "router.(*Server).Serve") || strings.Contains(fn, "router.(*Server).serveConn") {
				server = true
			}
			if !more {
				break
			}
		}
		if server {
			total += live
			bySite[site] += live
		}
	}
	var sites []heapSite
	for w, b := range bySite {
		if per := float64(b) / float64(conns); per >= 8 {
			sites = append(sites, heapSite{w, per})
		}
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].perConn > sites[j].perConn })
	return float64(total) / float64(conns), sites
}
