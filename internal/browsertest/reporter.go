package browsertest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Reporter is a WebSocket client that sends a text report every period
// until silenced: the feed a live page under test (the monitor page)
// draws.
//
// It dials with gobwas/ws itself: this package must not import moontest,
// which imports the moonwire package (the layout test forbids that below
// it).
type Reporter struct {
	conn net.Conn
	// Addr is its address as the server sees it ("127.0.0.1:port"): the
	// monitor page's data-addr.
	Addr string

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Report connects to url (with header in the handshake) and sends
// report(0), report(1), ... as text every period until Silence or the
// test's end. What the server sends is read and dropped, so that the
// client never holds the route's broadcasts up.
func Report(t testing.TB, url string, header http.Header, period time.Duration, report func(i int) string) *Reporter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	conn, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}.Dial(ctx, url)
	if err != nil {
		t.Fatalf("reporter: dial %s: %v", url, err)
	}
	r := &Reporter{conn: conn, Addr: conn.LocalAddr().String(), stop: make(chan struct{}), done: make(chan struct{})}
	var in io.Reader = conn
	if br != nil { // bytes the server sent with its handshake answer
		in = io.MultiReader(br, conn)
	}
	go func() { _, _ = io.Copy(io.Discard, in) }()
	go func() {
		defer close(r.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			_ = conn.SetWriteDeadline(time.Now().Add(Wait))
			if err := wsutil.WriteClientText(conn, []byte(report(i))); err != nil {
				return // closed: the test goes on without it
			}
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(r.Leave)
	return r
}

// Silence stops the reports and waits until no more is sent; the
// connection stays open.
func (r *Reporter) Silence() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// Leave silences r and closes its connection (no closing handshake: the
// server sees the client go).
func (r *Reporter) Leave() {
	r.Silence()
	_ = r.conn.Close()
}

// Wave is the i-th value of a slow wave around base, a phase per client,
// to two decimals: reports whose lines a screenshot tells apart.
func Wave(i, client int, base, amp float64) float64 {
	return math.Round((base+amp*math.Sin(float64(i)/6+float64(client)*2.1))*100) / 100
}

// MonitorPoints is JavaScript for the number of points of the monitor
// page's line for the client at addr (its data-addr): 0 when it has no
// line or an empty one.
func MonitorPoints(addr string) string {
	return fmt.Sprintf(`(() => { const p = document.querySelector('#monitor-chart path[data-addr=%q]');
	  const d = p ? p.getAttribute("d") || "" : ""; return d === "" ? 0 : d.split("L").length })()`, addr)
}
