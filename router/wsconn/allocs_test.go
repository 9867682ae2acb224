package wsconn

import (
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// TestSteadyStateAllocs pins the hot paths at zero allocations once the
// pools are warm.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	if testing.Short() {
		t.Skip("allocation counts in -short mode are not pinned")
	}
	var frames [][]byte
	for range 8 {
		frames = append(frames, mframe(ws.OpText, textOf(32)))
	}
	frames = append(frames, mfrag(false, ws.OpText, textOf(100)), mframe(ws.OpPing, "p"), mfrag(true, ws.OpContinuation, textOf(100)))
	pristine := cat(frames...)
	buf := make([]byte, len(pristine))
	p := &Parser{MaxMessage: 1 << 20}
	payload := make([]byte, 4096)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"parse", func() {
			copy(buf, pristine)
			for off := 0; off < len(buf); {
				ev, n, err := p.Next(buf[off:])
				if err != nil || n == 0 {
					t.Fatalf("n=%d err=%v", n, err)
				}
				off += n
				if ev.Owned {
					bufpool.Put(ev.Payload)
				}
			}
		}},
		{"frame 32B", func() { NewFrame(ws.OpText, payload[:32]).Release() }},
		{"frame 4KiB", func() { NewFrame(ws.OpBinary, payload).Release() }},
		{"close frame", func() { NewCloseFrame(1000, "bye").Release() }},
	} {
		tc.f()
		if a := testing.AllocsPerRun(200, tc.f); a > 0 {
			t.Errorf("%s: %.1f allocations per run", tc.name, a)
		}
	}
}
