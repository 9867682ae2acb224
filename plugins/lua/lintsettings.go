package lua

import (
	"slices"

	"github.com/yuin/gopher-lua/ast"
)

// settingsReads finds the settings keys the files read: ws.settings.x,
// ws.settings["x"], s.x for a name s that holds ws.settings (local s =
// ws.settings, or ws.settings or {}), and the literal keys passed to a
// getter (see settingsLint.keyed). dynamic is true when some use of
// ws.settings, of such a name or of ws itself is anything else — a computed
// key, pairs(ws.settings), passing it to a function, require "ws" — after
// which any key may be read and no key can be called unread.
//
// Names are matched without scopes: a name that holds ws.settings
// somewhere counts everywhere. That only adds reads (or makes the use
// dynamic), so it can hide an unread key but never invent one.
func settingsReads(files []lintFile) (reads map[string]bool, dynamic bool) {
	s := &settingsLint{aliases: map[string]bool{}, reads: map[string]bool{},
		keyed: map[string]int{}, assigned: map[string]bool{}, calls: map[string][][]ast.Expr{}, uses: map[string]int{}}
	// Aliases of aliases: repeat until no new name holds the table.
	for changed := true; changed; {
		changed = false
		for _, f := range files {
			walkAssignments(f.chunk, func(lhs []ast.Expr, rhs []ast.Expr) {
				for i, l := range lhs {
					id, ok := l.(*ast.IdentExpr)
					if ok && i < len(rhs) && s.isSettings(rhs[i]) && !s.aliases[id.Value] {
						s.aliases[id.Value] = true
						changed = true
					}
				}
			})
		}
	}
	for _, f := range files {
		for _, st := range f.chunk {
			s.stmt(st)
		}
	}
	s.getters()
	return s.reads, s.dynamic
}

// getters turns the calls of the getters found into reads.
func (s *settingsLint) getters() {
	for name, i := range s.keyed {
		if s.assigned[name] || s.uses[name] != len(s.calls[name]) {
			s.dynamic = true
			return
		}
		for _, args := range s.calls[name] {
			k, ok := arg(args, i).(*ast.StringExpr)
			if !ok {
				s.dynamic = true
				return
			}
			s.reads[k.Value] = true
		}
	}
}

func arg(args []ast.Expr, i int) ast.Expr {
	if i < len(args) {
		return args[i]
	}
	return nil
}

// function walks the body of f, named name ("" for an anonymous one: a
// getter must have a name to find its calls by).
func (s *settingsLint) function(name string, f *ast.FunctionExpr) {
	lf := lintFunc{name: name}
	if f.ParList != nil {
		lf.params = f.ParList.Names
	}
	s.funcs = append(s.funcs, lf)
	s.block(f.Stmts)
	s.funcs = s.funcs[:len(s.funcs)-1]
}

// keyParam reports whether e names a parameter of the named function it
// is directly in, and records that function as a getter keyed by it.
func (s *settingsLint) keyParam(e ast.Expr) bool {
	id, ok := e.(*ast.IdentExpr)
	if !ok || len(s.funcs) == 0 {
		return false
	}
	f := s.funcs[len(s.funcs)-1]
	if f.name == "" {
		return false
	}
	for i, p := range f.params {
		if p == id.Value {
			if j, seen := s.keyed[f.name]; seen && j != i {
				return false // two getters of one name, keyed differently
			}
			s.keyed[f.name] = i
			return true
		}
	}
	return false
}

// assignedParam notes an assignment to name in the current function: if
// name is its key parameter, the keys its callers name are not the keys
// it reads.
func (s *settingsLint) assignedParam(name string) {
	for _, f := range s.funcs {
		if f.name != "" && slices.Contains(f.params, name) {
			s.assigned[f.name] = true
		}
	}
}

type settingsLint struct {
	aliases map[string]bool // names that hold ws.settings
	reads   map[string]bool
	dynamic bool

	// A getter such as chat.lua's
	//	local function setting(name, default) return ws.settings[name] or default end
	// reads the keys its callers name: ws.settings[p] with p a parameter
	// of the named function it is directly in records the function and
	// p's position in keyed; its calls (calls) with a literal there are
	// reads of that key. Any other use of the function's name (uses
	// counts them all, calls included), a call with another argument, or
	// an assignment to p (assigned) makes the settings dynamic.
	funcs    []lintFunc // the named functions being walked, innermost last
	keyed    map[string]int
	assigned map[string]bool // getter names whose key parameter is assigned
	calls    map[string][][]ast.Expr
	uses     map[string]int
}

// lintFunc is a named function whose body is being walked.
type lintFunc struct {
	name   string
	params []string
}

// isSettings reports whether e evaluates to ws.settings (or may: a or b
// with either side being it).
func (s *settingsLint) isSettings(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.AttrGetExpr:
		k, ok := e.Key.(*ast.StringExpr)
		return ok && k.Value == "settings" && isIdent(e.Object, "ws")
	case *ast.IdentExpr:
		return s.aliases[e.Value]
	case *ast.LogicalOpExpr:
		return s.isSettings(e.Lhs) || s.isSettings(e.Rhs)
	}
	return false
}

// walkAssignments calls fn with both sides of every assignment and local
// declaration in stmts, nested functions included.
func walkAssignments(stmts []ast.Stmt, fn func(lhs, rhs []ast.Expr)) {
	visit := func(stmts []ast.Stmt) {
		for _, st := range stmts {
			switch st := st.(type) {
			case *ast.AssignStmt:
				fn(st.Lhs, st.Rhs)
			case *ast.LocalAssignStmt:
				lhs := make([]ast.Expr, len(st.Names))
				for i, n := range st.Names {
					lhs[i] = &ast.IdentExpr{Value: n}
				}
				fn(lhs, st.Exprs)
			}
		}
	}
	visit(stmts)
	walkStmts(stmts, func(e ast.Expr) {
		if f, ok := e.(*ast.FunctionExpr); ok {
			visit(f.Stmts)
			walkBlocks(f.Stmts, visit)
		}
	})
	walkBlocks(stmts, visit)
}

// walkBlocks calls visit on every nested block of stmts (not function
// bodies: walkAssignments reaches those through their expressions).
func walkBlocks(stmts []ast.Stmt, visit func([]ast.Stmt)) {
	for _, st := range stmts {
		var inner [][]ast.Stmt
		switch st := st.(type) {
		case *ast.DoBlockStmt:
			inner = [][]ast.Stmt{st.Stmts}
		case *ast.WhileStmt:
			inner = [][]ast.Stmt{st.Stmts}
		case *ast.RepeatStmt:
			inner = [][]ast.Stmt{st.Stmts}
		case *ast.IfStmt:
			inner = [][]ast.Stmt{st.Then, st.Else}
		case *ast.NumberForStmt:
			inner = [][]ast.Stmt{st.Stmts}
		case *ast.GenericForStmt:
			inner = [][]ast.Stmt{st.Stmts}
		}
		for _, b := range inner {
			visit(b)
			walkBlocks(b, visit)
		}
	}
}

// stmt classifies the uses of ws.settings in a statement.
func (s *settingsLint) stmt(st ast.Stmt) {
	switch st := st.(type) {
	case *ast.AssignStmt:
		for _, l := range st.Lhs {
			if id, ok := l.(*ast.IdentExpr); ok {
				if id.Value == "ws" {
					s.dynamic = true // ws replaced: cannot follow it
				}
				s.assignedParam(id.Value)
				continue
			}
			s.expr(l)
		}
		s.bindings(st.Lhs, st.Rhs)
	case *ast.LocalAssignStmt:
		for _, n := range st.Names {
			s.assignedParam(n) // local k shadows the parameter k
		}
		if len(st.Names) == 1 && len(st.Exprs) == 1 {
			if f, ok := st.Exprs[0].(*ast.FunctionExpr); ok {
				s.function(st.Names[0], f)
				return
			}
		}
		lhs := make([]ast.Expr, len(st.Names))
		for i, n := range st.Names {
			lhs[i] = &ast.IdentExpr{Value: n}
		}
		s.bindings(lhs, st.Exprs)
	case *ast.FuncCallStmt:
		s.expr(st.Expr)
	case *ast.DoBlockStmt:
		s.block(st.Stmts)
	case *ast.WhileStmt:
		s.expr(st.Condition)
		s.block(st.Stmts)
	case *ast.RepeatStmt:
		s.block(st.Stmts)
		s.expr(st.Condition)
	case *ast.IfStmt:
		s.expr(st.Condition)
		s.block(st.Then)
		s.block(st.Else)
	case *ast.NumberForStmt:
		s.assignedParam(st.Name)
		s.expr(st.Init)
		s.expr(st.Limit)
		s.expr(st.Step)
		s.block(st.Stmts)
	case *ast.GenericForStmt:
		for _, n := range st.Names {
			s.assignedParam(n)
		}
		for _, e := range st.Exprs {
			s.expr(e)
		}
		s.block(st.Stmts)
	case *ast.FuncDefStmt:
		if id, ok := st.Name.Func.(*ast.IdentExpr); ok {
			s.function(id.Value, st.Func) // function f(): f is defined, not used
			return
		}
		s.expr(st.Name.Func)
		s.expr(st.Name.Receiver)
		s.function("", st.Func)
	case *ast.ReturnStmt:
		for _, e := range st.Exprs {
			s.expr(e)
		}
	}
}

func (s *settingsLint) block(stmts []ast.Stmt) {
	for _, st := range stmts {
		s.stmt(st)
	}
}

// bindings walks the right-hand sides of an assignment: one that holds
// ws.settings bound to a plain name is an alias (followed through its
// uses), not a use.
func (s *settingsLint) bindings(lhs, rhs []ast.Expr) {
	for i, r := range rhs {
		if i < len(lhs) && s.isSettings(r) {
			if _, ok := lhs[i].(*ast.IdentExpr); ok {
				s.aliasValue(r)
				continue
			}
		}
		s.expr(r)
	}
}

// aliasValue walks an expression that isSettings, bound to an alias:
// the settings parts are fine, anything else in it is a plain expression.
func (s *settingsLint) aliasValue(e ast.Expr) {
	switch e := e.(type) {
	case *ast.AttrGetExpr, *ast.IdentExpr:
		// ws.settings or an alias: the binding itself reads nothing.
	case *ast.LogicalOpExpr:
		for _, side := range []ast.Expr{e.Lhs, e.Rhs} {
			if s.isSettings(side) {
				s.aliasValue(side)
			} else {
				s.expr(side)
			}
		}
	}
}

// expr classifies the uses of ws.settings in an expression.
func (s *settingsLint) expr(e ast.Expr) {
	switch e := e.(type) {
	case nil:
	case *ast.AttrGetExpr:
		if s.isSettings(e.Object) {
			s.aliasValue(e.Object)
			if k, ok := e.Key.(*ast.StringExpr); ok {
				s.reads[k.Value] = true
				return
			}
			if s.keyParam(e.Key) {
				return // a getter: its calls say what it reads
			}
			s.dynamic = true // ws.settings[k]
			return
		}
		if s.isSettings(e) {
			s.dynamic = true // ws.settings as a value: pairs(ws.settings), f(ws.settings)
			return
		}
		if isIdent(e.Object, "ws") {
			if _, ok := e.Key.(*ast.StringExpr); ok {
				return // ws.route, ws.broadcast: not the settings
			}
			s.dynamic = true // ws[k]
			return
		}
		s.expr(e.Object)
		s.expr(e.Key)
	case *ast.IdentExpr:
		// A bare ws or settings alias used as a value: passed on, iterated,
		// compared; what happens to it is out of sight.
		if e.Value == "ws" || s.aliases[e.Value] {
			s.dynamic = true
		}
		s.uses[e.Value]++
	case *ast.StringExpr:
		// _G["ws"], rawget(ws, "settings"): a way round the names.
		if e.Value == "ws" || e.Value == "settings" {
			s.dynamic = true
		}
	case *ast.TableExpr:
		for _, f := range e.Fields {
			s.expr(f.Key)
			s.expr(f.Value)
		}
	case *ast.FuncCallExpr:
		if id, ok := e.Func.(*ast.IdentExpr); ok {
			s.calls[id.Value] = append(s.calls[id.Value], e.Args)
		}
		s.expr(e.Func)
		s.expr(e.Receiver)
		for _, a := range e.Args {
			s.expr(a)
		}
	case *ast.LogicalOpExpr:
		s.expr(e.Lhs)
		s.expr(e.Rhs)
	case *ast.RelationalOpExpr:
		s.expr(e.Lhs)
		s.expr(e.Rhs)
	case *ast.StringConcatOpExpr:
		s.expr(e.Lhs)
		s.expr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		s.expr(e.Lhs)
		s.expr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		s.expr(e.Expr)
	case *ast.UnaryNotOpExpr:
		s.expr(e.Expr)
	case *ast.UnaryLenOpExpr:
		s.expr(e.Expr)
	case *ast.FunctionExpr:
		s.function("", e)
	}
}
