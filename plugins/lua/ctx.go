package lua

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/budget"
	"github.com/moonwire/moonwire/plugins/internal/suspend"
)

// ErrTimeout is wrapped by the ScriptError of a callback stopped for running
// past its route's handler timeout: errors.Is(err, ErrTimeout).
var ErrTimeout = errors.New("handler timeout exceeded")

// ErrMemory is wrapped by the ScriptError of a callback stopped because the
// process's heap passed Options.MemoryLimit while it ran.
var ErrMemory = errors.New("memory limit exceeded")

// ErrStopping is the cause of a route build stopped by
// Engine.StopLoading: the server is shutting down.
var ErrStopping = errors.New("the server is shutting down")

// vmCtx is a VM's long-lived context: gopher-lua checks it between
// instructions, and the engine's watchdog cancels it when a callback runs
// past its deadline. One context serves many calls, so a callback costs no
// context allocation.
//
// It implements AfterFunc so that context.WithCancel children (gopher-lua
// makes one per coroutine) register here instead of in a map that would
// keep every coroutine ever created alive; a registration is dropped when
// its coroutine is garbage-collected (see trackThread).
type vmCtx struct {
	v    *vm // whose account budget.Charge reaches; nil in tests
	done chan struct{}
	err  atomic.Pointer[error]

	mu    sync.Mutex
	funcs map[uint64]func()
	next  uint64
}

func newVMCtx(v *vm) *vmCtx {
	return &vmCtx{v: v, done: make(chan struct{}), funcs: make(map[uint64]func())}
}

func (c *vmCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *vmCtx) Done() <-chan struct{}       { return c.done }

// Value offers the VM's account (see budget.Charge) and its suspender
// (see suspend.Do) to module plugins.
func (c *vmCtx) Value(key any) any {
	if c.v == nil {
		return nil
	}
	switch key.(type) {
	case budget.Key:
		return vmCharger{c.v}
	case suspend.Key:
		return suspender{c.v}
	}
	return nil
}

// vmCharger is a VM's account as module plugins see it.
type vmCharger struct{ v *vm }

// Charge implements budget.Charger. A negative size is refused rather
// than credited: it is a size computation that overflowed (a large count
// times a length), and the allocation it stands for is huge, not free.
func (c vmCharger) Charge(what string, n int64) error {
	if n < 0 {
		return fmt.Errorf("%s: result size out of range (%d bytes)", what, n)
	}
	if max := int64(c.v.eng.maxStr); n > max {
		return fmt.Errorf("%s: result of %d bytes exceeds the limit of %d", what, n, max)
	}
	c.v.spent.Add(n)
	return nil
}

func (c *vmCtx) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// cancel stops every call running under c, including coroutines.
func (c *vmCtx) cancel() {
	err := ErrTimeout
	if !c.err.CompareAndSwap(nil, &err) {
		return
	}
	close(c.done)
	c.mu.Lock()
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, f := range funcs {
		f()
	}
}

// AfterFunc implements the interface context.WithCancel looks for.
func (c *vmCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.funcs == nil {
		c.mu.Unlock()
		f()
		return func() bool { return false }
	}
	id := c.next
	c.next++
	c.funcs[id] = f
	c.mu.Unlock()
	return func() bool { return c.forget(id) }
}

func (c *vmCtx) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.funcs[id]
	delete(c.funcs, id)
	return ok
}

// mark returns the id the next registration will get.
func (c *vmCtx) mark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

// trackThread ties the registrations made since mark to th's life: when
// the coroutine is collected, they go too.
func (c *vmCtx) trackThread(th *glua.LState, from uint64) {
	to := c.mark()
	if from == to {
		return
	}
	runtime.AddCleanup(th, func(r [2]uint64) {
		for id := r[0]; id < r[1]; id++ {
			c.forget(id)
		}
	}, [2]uint64{from, to})
}

var _ context.Context = (*vmCtx)(nil)
