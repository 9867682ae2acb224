package lua

import (
	"fmt"
	"reflect"
	"unsafe"

	glua "github.com/yuin/gopher-lua"
)

// Protected calls that leave the caller's variables alone.
//
// gopher-lua v1.1.2 closes the wrong upvalues when an error is raised
// (upstream issue 448, "shared upvalue"). LState.raiseError and
// LState.Error call closeAllUpvalues, which walks every call frame down to
// the bottom of the stack and closes the open upvalues of all of them, not
// only those of the frames the error unwinds. When a pcall catches the
// error, its caller and the caller's callers go on running with their
// locals cut off from the closures that captured them: such a closure keeps
// a private copy, the function keeps the register, and a closure made
// afterwards captures the register afresh. So
//
//	local r = {}
//	local function add(x) r[#r+1] = x end
//	pcall(error, "x")
//	function M.on_open(c) r = {}; add("a"); c:send(#r) end -- sends 0
//
// Every caught error does it (error() with any value, runtime errors,
// argument errors, the handler timeout), from pcall at a script's top
// level, inside a callback or a nested function, and inside a coroutine
// (for that coroutine's frames). xpcall has the opposite bug: with an error
// handler set (hasErrorFunc), nothing is closed at all, so upvalues of the
// frames the error did unwind stay open on registry slots that later calls
// reuse (a closure made inside the failed call then reads whatever local
// lands there); and because every PCall resets that flag to false on the
// way out instead of restoring it, a pcall inside an xpcall brings the
// first bug back for the rest of the xpcall.
//
// Reference Lua closes exactly the upvalues at or above the protected
// call's stack slot once it catches an error (luaD_pcall's luaF_close).
// moonwire gets the same result without patching gopher-lua: an LState
// keeps its open upvalues in one list (uvcache), sorted by stack slot, and
// a protected call detaches that list before running its function. The
// only open upvalues an error can then see, and close, are the ones the
// protected function's own frames made, which are the ones reference Lua
// would close; the caller's list is put back when the call returns.
// gopher-lua offers no API for the list, so it is reached by its field
// offset, checked against the field's name and type when the package
// initialises (upvalueLayout).
//
// PCall is never given an error handler, so hasErrorFunc stays false and
// every raise closes what it should at the point of the error, with the
// registers still holding the values. xpcall runs its handler itself, from
// a Go function between PCall and the called function (runXpcall), with
// the failed frames still on the stack.
//
// Two more differences from gopher-lua's pcall come with it. A coroutine
// cannot yield inside a protected call on its own thread: gopher-lua runs
// the protected function in a nested Go call that it cannot suspend, and
// its yield resumed the caller with the coroutine's stack half unwound;
// moonwire's yield fails there as Lua 5.1's does. And a protected call does
// not catch the watchdog's stop (handler timeout, memory limit).
//
// One case stays short of reference Lua: a Go panic inside pcall (a bug in
// a builtin, not a Lua error) reaches moonwire only after gopher-lua has
// cleared the failed frames' registers, so closures made in those frames
// read nil afterwards. xpcall, which sees the panic first, keeps them.

// upvalueLayout holds the offsets of LState.uvcache and Upvalue.next, the
// head and the links of an LState's list of open upvalues.
var upvalueLayout = func() (l struct{ head, next uintptr }) {
	upvalue := reflect.TypeFor[*glua.Upvalue]()
	field := func(t reflect.Type, name string) uintptr {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != upvalue {
			// A gopher-lua whose layout differs would have the bug or not;
			// either way this code must be looked at again, and running
			// scripts with the bug back would be worse than not starting.
			panic("moonwire: gopher-lua's " + t.Name() + "." + name + " is not a *Upvalue; plugins/lua/pcall.go was written against gopher-lua v1.1.2")
		}
		return f.Offset
	}
	l.head = field(reflect.TypeFor[glua.LState](), "uvcache")
	l.next = field(reflect.TypeFor[glua.Upvalue](), "next")
	return l
}()

// openUpvalues is L's list of open upvalues.
func openUpvalues(L *glua.LState) **glua.Upvalue {
	return (**glua.Upvalue)(unsafe.Add(unsafe.Pointer(L), upvalueLayout.head))
}

func nextUpvalue(uv *glua.Upvalue) **glua.Upvalue {
	return (**glua.Upvalue)(unsafe.Add(unsafe.Pointer(uv), upvalueLayout.next))
}

// closeOpenUpvalues closes every upvalue on L's list and empties it, as
// gopher-lua's closeUpvalues does for a frame that returns.
func closeOpenUpvalues(L *glua.LState) {
	head := openUpvalues(L)
	uv := *head
	*head = nil
	for uv != nil {
		next := nextUpvalue(uv)
		uv.Close()
		if uv.Value() == nil {
			// The slot was already cleared: a Go panic (not a Lua error)
			// gets back to the protected call only after PCall reset the
			// stack. nil is the one value that is not another variable's.
			uv.SetValue(glua.LNil)
		}
		uv, *next = *next, nil
	}
}

// protectedCall is L.PCall(nargs, nret, nil) with the caller's open
// upvalues out of the error's reach.
func protectedCall(L *glua.LState, nargs, nret int) error {
	head := openUpvalues(L)
	outer := *head
	*head = nil
	// PCall without a handler recovers every panic and cannot raise one of
	// its own, so no defer is needed to put the list back.
	err := L.PCall(nargs, nret, nil)
	if *head != nil {
		// Left open by an error that did not go through raiseError (a Go
		// panic in a builtin): stale now, and findUpvalue would hand them
		// to the next function that uses the same slots.
		closeOpenUpvalues(L)
	}
	*head = outer
	return err
}

// protector implements the sandbox's pcall, xpcall and coroutine.yield for
// one VM (and the coroutines it runs, which share its goroutine).
type protector struct {
	// running are the threads (the VM's state or a coroutine) of the
	// protected calls under way, innermost last.
	running []*glua.LState
	// xpcallBody runs xpcall's function and, on error, its handler.
	xpcallBody *glua.LFunction
}

// openProtected replaces L's pcall, xpcall and coroutine.yield (the base
// and coroutine libraries must be open).
func openProtected(L *glua.LState) {
	p := &protector{}
	p.xpcallBody = L.NewFunction(p.runXpcall)
	L.G.Global.RawSetString("pcall", L.NewFunction(p.pcall))
	L.G.Global.RawSetString("xpcall", L.NewFunction(p.xpcall))
	L.GetGlobal("coroutine").(*glua.LTable).RawSetString("yield", L.NewFunction(p.yield))
}

// call runs the function and nargs arguments on top of L's stack as
// protectedCall does, keeping every result.
func (p *protector) call(L *glua.LState, nargs int) error {
	p.running = append(p.running, L)
	err := protectedCall(L, nargs, glua.MultRet)
	p.running[len(p.running)-1] = nil
	p.running = p.running[:len(p.running)-1]
	if err != nil {
		if ctx := L.Context(); ctx != nil && ctx.Err() != nil {
			// The watchdog stopped the callback (handler timeout, memory
			// limit): that is not the script's to catch. gopher-lua would
			// raise again at the next instruction, but a callback that
			// ends in `return pcall(f)` has none.
			L.Error(errorValue(err), 0)
		}
	}
	return err
}

// errorValue is the Lua value a protected call's error carries.
func errorValue(err error) glua.LValue {
	if aerr, ok := err.(*glua.ApiError); ok {
		return aerr.Object
	}
	return glua.LString(err.Error())
}

// pcall is Lua's pcall(f, ...), with gopher-lua's argument checks.
func (p *protector) pcall(L *glua.LState) int {
	L.CheckAny(1)
	if f := L.Get(1); f.Type() != glua.LTFunction && L.GetMetaField(f, "__call").Type() != glua.LTFunction {
		L.Push(glua.LFalse)
		L.Push(glua.LString("attempt to call a " + f.Type().String() + " value"))
		return 2
	}
	if err := p.call(L, L.GetTop()-1); err != nil {
		L.Push(glua.LFalse)
		L.Push(errorValue(err))
		return 2
	}
	L.Insert(glua.LTrue, 1)
	return L.GetTop()
}

// xpcall is Lua 5.1's xpcall(f, handler), with gopher-lua's argument
// checks.
func (p *protector) xpcall(L *glua.LState) int {
	f := L.CheckFunction(1)
	handler := L.CheckFunction(2)
	top := L.GetTop()
	L.Push(p.xpcallBody)
	L.Push(handler)
	L.Push(f)
	if err := p.call(L, 2); err != nil {
		L.Push(glua.LFalse)
		L.Push(errorValue(err))
		return 2
	}
	L.Insert(glua.LTrue, top+1)
	return L.GetTop() - top
}

// runXpcall(handler, f) calls f. When f fails it calls handler with the
// error at the point of failure, the failed frames still on the stack (a
// traceback sees them), and fails with the handler's result.
func (p *protector) runXpcall(L *glua.LState) int {
	handler := L.Get(1)
	L.Remove(1)
	ok := false
	defer func() {
		if ok {
			return
		}
		var msg glua.LValue
		switch r := recover().(type) {
		case *glua.ApiError:
			msg = r.Object
		default:
			msg = glua.LString(fmt.Sprint(r))
		}
		// A Lua error closed the failed frames' upvalues as it was raised;
		// a Go panic did not, and its registers are intact only until
		// PCall resets the stack, that is, now.
		closeOpenUpvalues(L)
		L.Push(handler)
		L.Push(msg)
		L.Call(1, 1) // an error in the handler is xpcall's error, as in gopher-lua
		// PCall would build a traceback for an error without one, which
		// xpcall does not return: the placeholder saves that work.
		panic(&glua.ApiError{Type: glua.ApiErrorRun, Object: L.Get(-1), StackTrace: "(xpcall)"})
	}()
	L.Call(0, glua.MultRet)
	ok = true
	return L.GetTop()
}

// yield is coroutine.yield, refused inside a protected call on the same
// thread as reference Lua refuses it: gopher-lua cannot suspend the Go
// call that runs the protected function, and its own yield would resume
// the caller there with the coroutine's stack half unwound.
func (p *protector) yield(L *glua.LState) int {
	for i := len(p.running) - 1; i >= 0; i-- {
		if p.running[i] == L {
			L.Error(glua.LString("attempt to yield across metamethod/C-call boundary"), 0)
		}
	}
	return -1 // what gopher-lua's coroutine.yield returns: the VM yields
}
