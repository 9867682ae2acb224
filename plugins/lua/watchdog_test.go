package lua

import (
	"testing"
	"time"
)

// TestWatchdogLateTickIsNotATimeout: on a busy machine the watchdog can
// wake long after its tick; a callback that began just before it woke
// must not look as old as the watchdog's jump. Its time counts from the
// first tick that saw it running, so it is stopped one handler timeout
// after that, not at once.
func TestWatchdogLateTickIsNotATimeout(t *testing.T) {
	t.Parallel()
	v := &vm{route: &Route{cfg: RouteConfig{HandlerTimeout: time.Second}}, ctx: newVMCtx(nil)}
	v.begin()
	late := int64(5 * time.Second) // the watchdog's first tick in five seconds
	v.checkDeadline(late, 0)
	if v.timedOut || v.ctx.Err() != nil {
		t.Fatal("a callback first seen by a late tick was stopped at once")
	}
	v.checkDeadline(late+int64(999*time.Millisecond), 0)
	if v.timedOut {
		t.Fatal("stopped before a handler timeout had passed since it was seen")
	}
	v.checkDeadline(late+int64(time.Second), 0)
	if !v.timedOut || v.ctx.Err() == nil {
		t.Fatal("not stopped a handler timeout after it was first seen")
	}
	if v.end() != true {
		t.Fatal("end does not report the timeout")
	}
}
