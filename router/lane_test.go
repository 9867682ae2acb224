package router

import (
	"sync"
	"testing"
	"time"
)

// TestLaneLending: a task run inline on an idle lane excludes the lane's
// goroutine while it runs; what is queued meanwhile runs after it, in
// order; a busy lane is not lent; a lane stopped while lent still runs what
// was queued and exits once it is given back.
func TestLaneLending(t *testing.T) {
	l := newLane(nil, 0, nil)
	go l.run()

	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }

	inInline := make(chan struct{})
	release := make(chan struct{})
	done := make(chan bool)
	go func() {
		done <- l.tryInline(func() {
			note("inline")
			close(inInline)
			<-release
			note("inline end")
		})
	}()
	<-inInline
	ran := make(chan struct{})
	l.push(task{kind: taskFunc, fn: func() { note("queued 1") }})
	l.push(task{kind: taskFunc, fn: func() { note("queued 2"); close(ran) }})
	if l.tryInline(func() { note("second inline") }) {
		t.Fatal("a lent lane was lent twice")
	}
	select {
	case <-ran:
		t.Fatal("a queued task ran while the lane was lent")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if !<-done {
		t.Fatal("an idle lane was not lent")
	}
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("tasks queued while the lane was lent did not run after it")
	}
	mu.Lock()
	got := append([]string(nil), order...)
	mu.Unlock()
	want := []string{"inline", "inline end", "queued 1", "queued 2"}
	if len(got) != len(want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}

	// A lane busy with a task is not lent.
	busy := make(chan struct{})
	unblock := make(chan struct{})
	l.push(task{kind: taskFunc, fn: func() { close(busy); <-unblock }})
	<-busy
	if l.tryInline(func() {}) {
		t.Fatal("a busy lane was lent")
	}
	close(unblock)

	// Stopped while lent: the goroutine exits after the give-back, having
	// run what was queued.
	var last bool
	ok := false
	deadline := time.Now().Add(10 * time.Second)
	for !ok && time.Now().Before(deadline) {
		ok = l.tryInline(func() {
			l.push(task{kind: taskFunc, fn: func() { last = true }})
			l.stop()
		})
	}
	if !ok {
		t.Fatal("the lane never became idle")
	}
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a lane stopped while lent did not exit")
	}
	if !last {
		t.Fatal("a task queued before stop did not run")
	}
	if l.tryInline(func() {}) {
		t.Fatal("a stopped lane was lent")
	}
}
