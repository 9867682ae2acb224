package router

import "testing"

// TestRecoveryHoldsABoundedAmount: live messages held during a replay are
// bounded by the write queue's bytes and by maxPending; past either the
// recovery gives up holding (the client reloads) instead of growing.
func TestRecoveryHoldsABoundedAmount(t *testing.T) {
	s := &Server{}
	s.live.Store(&liveConfig{Config: Config{WriteQueue: 100}})
	c := &Conn{srv: s}

	rc := &recovery{}
	rc.take(c, 1, Text, make([]byte, 60), nil)
	if len(rc.held) != 1 || rc.overflow {
		t.Fatalf("held %d, overflow %v", len(rc.held), rc.overflow)
	}
	rc.take(c, 2, Text, make([]byte, 60), nil) // 120 bytes > 100
	if !rc.overflow || rc.held != nil || rc.heldBytes != 0 {
		t.Fatalf("past the bytes: held %d (%d bytes), overflow %v", len(rc.held), rc.heldBytes, rc.overflow)
	}
	rc.take(c, 3, Text, []byte("x"), nil)
	if rc.held != nil {
		t.Fatal("held again after overflowing")
	}

	s.live.Store(&liveConfig{Config: Config{WriteQueue: 1 << 30}})
	rc = &recovery{}
	for i := range maxPending + 5 {
		rc.take(c, uint64(i+1), Text, []byte("x"), nil)
	}
	if !rc.overflow || rc.held != nil {
		t.Fatalf("past maxPending: held %d, overflow %v", len(rc.held), rc.overflow)
	}
}
