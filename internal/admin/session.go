package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Dashboard session and login-throttle limits.
const (
	// sessionCookie is the name of the dashboard's session cookie.
	sessionCookie = "moonwire_admin"
	// sessionLifetime is how long a login lasts; the cookie's Max-Age.
	sessionLifetime = 12 * time.Hour
	// maxSessions bounds the live sessions: a token holder logging in in a
	// loop must not grow the table, so the oldest is evicted.
	maxSessions = 64

	// loginFailures failed logins per loginWindow from one address are
	// allowed; further attempts get 429 until the window ends.
	loginFailures = 10
	loginWindow   = time.Minute
	// maxThrottled bounds the throttle table: an attacker with many
	// addresses must not grow it without limit.
	maxThrottled = 1024
)

// sessionID is the SHA-256 digest of a session's cookie value: the table
// holds digests, so a dump of memory does not yield usable cookies.
type sessionID [sha256.Size]byte

type session struct {
	created time.Time
	expires time.Time
}

// sessions are the live dashboard logins.
type sessions struct {
	mu   sync.Mutex
	live map[sessionID]session
	now  func() time.Time // time.Now; tests move the clock
}

func newSessions() *sessions {
	return &sessions{live: make(map[sessionID]session), now: time.Now}
}

// create starts a session and returns its cookie value: 32 random bytes,
// base64url. The oldest session is evicted when maxSessions are live.
func (s *sessions) create() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	value := base64.RawURLEncoding.EncodeToString(raw[:])
	id := sessionID(sha256.Sum256([]byte(value)))
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	for len(s.live) >= maxSessions {
		var oldest sessionID
		var at time.Time
		first := true
		for k, v := range s.live {
			if first || v.created.Before(at) {
				oldest, at, first = k, v.created, false
			}
		}
		delete(s.live, oldest)
	}
	s.live[id] = session{created: now, expires: now.Add(sessionLifetime)}
	return value, nil
}

// valid reports whether a cookie value belongs to a live session. The
// lookup is by digest, so its timing says nothing about the value.
func (s *sessions) valid(value string) bool {
	if value == "" || len(value) > 128 {
		return false
	}
	id := sessionID(sha256.Sum256([]byte(value)))
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.live[id]
	if ok && !s.now().Before(se.expires) {
		delete(s.live, id)
		return false
	}
	return ok
}

// remove ends the session of a cookie value, if any.
func (s *sessions) remove(value string) {
	id := sessionID(sha256.Sum256([]byte(value)))
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, id)
}

// count returns the number of sessions in the table (for tests).
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

func (s *sessions) purgeLocked(now time.Time) {
	for k, v := range s.live {
		if !now.Before(v.expires) {
			delete(s.live, k)
		}
	}
}

// fromRequest reports whether the request carries a live session cookie.
func (s *sessions) fromRequest(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	return err == nil && s.valid(c.Value)
}

// throttle counts failed logins per client address.
type throttle struct {
	mu    sync.Mutex
	fails map[netip.Addr]*failures
	now   func() time.Time
}

type failures struct {
	start time.Time // the window's start
	n     int
}

func newThrottle() *throttle {
	return &throttle{fails: make(map[netip.Addr]*failures), now: time.Now}
}

// clientKey is the throttle's key for a request: the peer's IP address,
// or for IPv6 its /64, since one host commonly holds a whole /64.
// X-Forwarded-For is not trusted: anyone can set it.
func clientKey(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// blocked reports how long the key must wait before it may try again; 0:
// it may try now.
func (t *throttle) blocked(key netip.Addr) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fails[key]
	if f == nil {
		return 0
	}
	end := f.start.Add(loginWindow)
	now := t.now()
	if !now.Before(end) {
		delete(t.fails, key)
		return 0
	}
	if f.n < loginFailures {
		return 0
	}
	return end.Sub(now)
}

// fail records a failed login of key.
func (t *throttle) fail(key netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f := t.fails[key]
	if f != nil && !now.Before(f.start.Add(loginWindow)) {
		f = nil // that window is over
	}
	if f == nil {
		if len(t.fails) >= maxThrottled {
			t.makeRoomLocked(now)
		}
		f = &failures{start: now}
		t.fails[key] = f
	}
	f.n++
}

// succeed forgets key's failures: an operator who mistyped the token a
// few times and then got it right starts afresh.
func (t *throttle) succeed(key netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fails, key)
}

// makeRoomLocked evicts one entry to make room: an arbitrary one (Go
// randomises map order), in constant time, so that a flood of failed
// logins from many addresses cannot make each further one scan the table.
// Expired entries also go lazily, in blocked.
func (t *throttle) makeRoomLocked(now time.Time) {
	for k, f := range t.fails {
		if !now.Before(f.start.Add(loginWindow)) || len(t.fails) >= maxThrottled {
			delete(t.fails, k)
		}
		if len(t.fails) < maxThrottled {
			return
		}
	}
}

// size returns the number of addresses in the table (for tests).
func (t *throttle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.fails)
}
