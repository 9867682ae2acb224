package admin

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestSessionsExpire(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: reloadAt}
	s := newSessions()
	s.now = clk.now
	v, err := s.create()
	if err != nil {
		t.Fatal(err)
	}
	if !s.valid(v) {
		t.Fatal("a new session is not valid")
	}
	clk.t = clk.t.Add(sessionLifetime - time.Second)
	if !s.valid(v) {
		t.Error("a session expired early")
	}
	clk.t = clk.t.Add(time.Second)
	if s.valid(v) {
		t.Error("a session outlived its lifetime")
	}
	if s.count() != 0 {
		t.Errorf("%d sessions kept after expiry", s.count())
	}
	for _, bad := range []string{"", "x", string(make([]byte, 200))} {
		if s.valid(bad) {
			t.Errorf("%q is valid", bad)
		}
	}
	// Distinct, random values.
	seen := map[string]bool{}
	for range 100 {
		v, _ := s.create()
		if seen[v] || len(v) != 43 {
			t.Fatalf("session value %q (seen %v)", v, seen[v])
		}
		seen[v] = true
	}
	if s.count() != maxSessions {
		t.Errorf("%d sessions, want %d", s.count(), maxSessions)
	}
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: reloadAt}
	th := newThrottle()
	th.now = clk.now
	a := netip.MustParseAddr("192.0.2.1")
	for range loginFailures - 1 {
		th.fail(a)
	}
	if w := th.blocked(a); w != 0 {
		t.Fatalf("blocked after %d failures", loginFailures-1)
	}
	th.fail(a)
	clk.t = clk.t.Add(10 * time.Second)
	if w := th.blocked(a); w != 50*time.Second {
		t.Errorf("wait %v, want 50s", w)
	}
	if w := th.blocked(netip.MustParseAddr("192.0.2.2")); w != 0 {
		t.Error("another address is blocked")
	}
	clk.t = clk.t.Add(50 * time.Second)
	if w := th.blocked(a); w != 0 {
		t.Errorf("still blocked after the window: %v", w)
	}

	// The table stays bounded however many addresses fail.
	for i := range 3 * maxThrottled {
		th.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := th.size(); n > maxThrottled {
		t.Errorf("%d addresses in the table, want at most %d", n, maxThrottled)
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"127.0.0.1:5555":                 "127.0.0.1",
		"[::ffff:10.0.0.1]:80":           "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::",
		"[2001:db8:1:2:ffff::1%eth0]:44": "2001:db8:1:2::",
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := clientKey(r); got.String() != want {
			t.Errorf("clientKey(%s) = %s, want %s", remote, got, want)
		}
	}
}
