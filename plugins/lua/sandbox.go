package lua

import (
	"io/fs"
	"math"
	"math/bits"
	"strings"

	glua "github.com/yuin/gopher-lua"
)

// The sandbox is built by construction, not by subtraction from a full
// state: the VM starts with no libraries (SkipOpenLibs), gets the five pure
// ones, and then loses the few base functions that reach outside
// (dofile, loadfile, module) or leak internals (_printregs).
//
// This is the one recipe: the module plugins' tests get their states from
// NewSandboxState (state.go), which builds a route's VM, not a state of
// its own making.

// libs are the standard libraries scripts get.
var libs = []struct {
	name string
	open glua.LGFunction
}{
	{glua.BaseLibName, glua.OpenBase},
	{glua.TabLibName, glua.OpenTable},
	{glua.StringLibName, glua.OpenString},
	{glua.MathLibName, glua.OpenMath},
	{glua.CoroutineLibName, glua.OpenCoroutine},
}

// removed are base functions scripts must not have.
var removed = []string{"dofile", "loadfile", "module", "_printregs", "require"}

// vmOptions size a VM. The registry may grow to a bounded size, so deep
// recursion ends in "stack overflow" rather than exhausting memory.
var vmOptions = glua.Options{
	SkipOpenLibs:     true,
	CallStackSize:    200,
	RegistrySize:     1024,
	RegistryMaxSize:  256 * 1024,
	RegistryGrowStep: 1024,
}

// prelude runs in every VM after the libraries are open. coroutine.wrap is
// rebuilt on the sandbox's coroutine.create (see vm.coCreate).
// ipairs follows Lua 5.2 (it honours __index; pairs, which honours
// __pairs, is in Go: see guardRawWriters) so that read-only proxies such as
// ws.settings iterate like the tables they stand for. math.huge is infinity, as in every Lua (gopher-lua
// makes it the largest finite number).
const prelude = `
math.huge = 1/0
local function inext(t, i)
  i = i + 1
  local v = t[i]
  if v ~= nil then return i, v end
end
ipairs = function(t)
  if type(t) ~= "table" then error("bad argument #1 to 'ipairs' (table expected, got " .. type(t) .. ")", 2) end
  return inext, t, 0
end
local create, resume, err = coroutine.create, coroutine.resume, error
local function pass(ok, ...)
  if not ok then err((...), 0) end
  return ...
end
coroutine.wrap = function(f)
  local co = create(f)
  return function(...) return pass(resume(co, ...)) end
end
`

// openSandbox prepares L's globals.
func (v *vm) openSandbox() error {
	L := v.L
	for _, lib := range libs {
		L.Push(L.NewFunction(lib.open))
		L.Push(glua.LString(lib.name))
		L.Call(1, 0)
	}
	g := L.G.Global
	for _, name := range removed {
		g.RawSetString(name, glua.LNil)
	}
	g.RawSetString("require", L.NewFunction(v.require))
	g.RawSetString("print", L.NewFunction(v.print))
	g.RawSetString("collectgarbage", L.NewFunction(collectGarbage))

	str := L.GetGlobal("string").(*glua.LTable)
	str.RawSetString("rep", L.NewFunction(v.strRep))
	str.RawSetString("dump", glua.LNil)
	v.openStrlib()

	co := L.GetGlobal("coroutine").(*glua.LTable)
	v.origCreate = co.RawGetString("create").(*glua.LFunction)
	co.RawSetString("create", L.NewFunction(v.coCreate))
	openProtected(L) // pcall, xpcall, coroutine.yield: see pcall.go

	fn, err := L.LoadString(prelude)
	if err != nil {
		return err
	}
	L.Push(fn)
	if err := L.PCall(0, 0, nil); err != nil {
		return err
	}
	guardRawWriters(L) // read-only values; see freeze.go
	return nil
}

// strRep is string.rep with a bound on the result. The size is checked
// before it is computed: len(s)*n overflows for the counts a script can
// pass (string.rep("abc", 2^62+1024, ",") comes to 2^64+4095 bytes, which
// wraps around to 4095), and a size that wrapped would be charged as a few
// bytes while the copy loop below ran until the process ran out of memory.
func (v *vm) strRep(L *glua.LState) int {
	s := L.CheckString(1)
	n := L.CheckInt(2)
	sep := L.OptString(3, "")
	if n <= 0 || s == "" && sep == "" {
		L.Push(glua.LString(""))
		return 1
	}
	// n pieces of s and sep each, less the last sep: the product is exact
	// in 128 bits, and a result that needs more than 63 is refused as it
	// is, whatever the limit.
	hi, lo := bits.Mul64(uint64(len(s))+uint64(len(sep)), uint64(n))
	if hi != 0 || lo > math.MaxInt64 {
		L.RaiseError("string.rep: result of more than %d bytes exceeds the limit of %d", int64(math.MaxInt64), v.eng.maxStr)
	}
	size := int64(lo) - int64(len(sep))
	v.charge(L, "string.rep", size)
	if sep == "" {
		L.Push(glua.LString(strings.Repeat(s, n)))
		return 1
	}
	var b strings.Builder
	b.Grow(int(size))
	for i := range n {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(s)
	}
	L.Push(glua.LString(b.String()))
	return 1
}

// coCreate is coroutine.create with the new thread's context registration
// tied to the thread's life (see vmCtx).
func (v *vm) coCreate(L *glua.LState) int {
	// Each coroutine is a full Lua state with its own stacks: a loop of
	// coroutine.create would eat memory faster than a deadline can stop it.
	if v.coroutines++; v.coroutines > v.eng.maxCo {
		L.RaiseError("too many coroutines in one callback (limit %d)", v.eng.maxCo)
	}
	from := v.ctx.mark()
	L.Push(v.origCreate)
	L.Push(L.CheckFunction(1))
	L.Call(1, 1)
	if th, ok := L.Get(-1).(*glua.LState); ok {
		v.ctx.trackThread(th, from)
	}
	return 1
}

// collectGarbage keeps the Lua API but not the lever: the Go runtime owns
// collection, so scripts cannot stall the process with forced GCs.
func collectGarbage(L *glua.LState) int {
	L.Push(glua.LNumber(0))
	return 1
}

// print goes to the structured log, at info level, tagged like log.info.
func (v *vm) print(L *glua.LState) int {
	var b strings.Builder
	for i := 1; i <= L.GetTop(); i++ {
		if i > 1 {
			b.WriteByte('\t')
		}
		b.WriteString(L.ToStringMeta(L.Get(i)).String())
	}
	v.logger().Info(b.String())
	return 0
}

// require resolves host modules, then scripts inside the scripts folder:
// require "lib.util" loads lib/util.lua (or lib/util/init.lua). Anything
// that would leave the folder is refused.
func (v *vm) require(L *glua.LState) int {
	name := L.CheckString(1)
	if mod := v.loaded.RawGetString(name); mod != glua.LNil {
		if mod == loadingSentinel {
			L.RaiseError("require %q: circular require", name)
		}
		L.Push(mod)
		return 1
	}
	file, err := v.route.resolveModule(name)
	if err != nil {
		L.RaiseError("require %q: %s", name, err.Error())
	}
	proto, err := v.route.moduleProto(file)
	if err != nil {
		L.RaiseError("require %q: %s", name, err.Error())
	}
	v.loaded.RawSetString(name, loadingSentinel)
	L.Push(L.NewFunctionFromProto(proto))
	L.Push(glua.LString(name))
	L.Call(1, 1)
	mod := L.Get(-1)
	if mod == glua.LNil {
		mod = glua.LTrue
	}
	v.loaded.RawSetString(name, mod)
	L.Push(mod)
	return 1
}

// loadingSentinel marks a module whose chunk is running, to catch cycles.
var loadingSentinel = glua.LString("\x00loading")

// resolveModule maps a module name to a file inside the scripts folder.
func (r *Route) resolveModule(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") ||
		strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return "", errorf("module names are dotted paths inside the scripts folder (lib.util)")
	}
	base := strings.ReplaceAll(name, ".", "/")
	for _, cand := range []string{base + ".lua", base + "/init.lua"} {
		if !fs.ValidPath(cand) {
			continue
		}
		if st, err := fs.Stat(r.cfg.FS, cand); err == nil && !st.IsDir() {
			return cand, nil
		}
	}
	return "", errorf("not found in the scripts folder")
}
