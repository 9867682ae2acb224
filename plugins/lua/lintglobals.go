package lua

import (
	"github.com/yuin/gopher-lua/ast"
)

// A VM serves many connections one after another, so a global a callback
// assigns is seen by every later callback of that VM, and not by the other
// VMs of the route: a per-connection value kept there leaks between
// connections, and a counter kept there counts per VM. lintGlobals finds
// assignments to globals inside functions by tracking the locals (and so
// the upvalues) in scope, the way the compiler resolves names. The top
// level's globals are the script's own setup and are fine.

// lintScope is a block's locals; its parent is the enclosing block,
// across function boundaries (a local of an outer function is an upvalue,
// not a global).
type lintScope struct {
	names  map[string]bool
	parent *lintScope
}

func (s *lintScope) child() *lintScope { return &lintScope{names: map[string]bool{}, parent: s} }

func (s *lintScope) declare(names ...string) {
	for _, n := range names {
		s.names[n] = true
	}
}

func (s *lintScope) local(name string) bool {
	for ; s != nil; s = s.parent {
		if s.names[name] {
			return true
		}
	}
	return false
}

type globalsLint struct {
	file string
	out  []Diagnostic
}

// lintGlobals reports every assignment to a global inside a function of
// chunk; file names the chunk in the diagnostics.
func lintGlobals(chunk []ast.Stmt, file string) []Diagnostic {
	g := &globalsLint{file: file}
	g.block(chunk, (&lintScope{}).child(), false)
	return g.out
}

// assign checks a write to name at line.
func (g *globalsLint) assign(name string, line int, sc *lintScope, inFunc bool) {
	if !inFunc || sc.local(name) {
		return
	}
	g.out = append(g.out, Diagnostic{
		File: g.file, Line: line,
		Msg: "global " + name + " assigned in a function: every connection this VM serves shares it (and other VMs do not see it); declare it local, or keep shared state in the store",
	})
}

func (g *globalsLint) block(stmts []ast.Stmt, sc *lintScope, inFunc bool) {
	for _, s := range stmts {
		g.stmt(s, sc, inFunc)
	}
}

func (g *globalsLint) stmt(s ast.Stmt, sc *lintScope, inFunc bool) {
	switch s := s.(type) {
	case *ast.AssignStmt:
		g.exprs(s.Rhs, sc, inFunc)
		for _, lhs := range s.Lhs {
			if id, ok := lhs.(*ast.IdentExpr); ok {
				g.assign(id.Value, lineOf(id, s), sc, inFunc)
				continue
			}
			g.expr(lhs, sc, inFunc) // t.k = v: a field, fine; t and k are reads
		}
	case *ast.LocalAssignStmt:
		// local function f (and, in gopher-lua, local f = function) sees
		// itself: the name is declared before the body is compiled.
		if len(s.Names) == 1 && len(s.Exprs) == 1 {
			if _, ok := s.Exprs[0].(*ast.FunctionExpr); ok {
				sc.declare(s.Names[0])
				g.exprs(s.Exprs, sc, inFunc)
				return
			}
		}
		g.exprs(s.Exprs, sc, inFunc)
		sc.declare(s.Names...)
	case *ast.FuncCallStmt:
		g.expr(s.Expr, sc, inFunc)
	case *ast.DoBlockStmt:
		g.block(s.Stmts, sc.child(), inFunc)
	case *ast.WhileStmt:
		g.expr(s.Condition, sc, inFunc)
		g.block(s.Stmts, sc.child(), inFunc)
	case *ast.RepeatStmt:
		// until sees the body's locals.
		body := sc.child()
		g.block(s.Stmts, body, inFunc)
		g.expr(s.Condition, body, inFunc)
	case *ast.IfStmt:
		g.expr(s.Condition, sc, inFunc)
		g.block(s.Then, sc.child(), inFunc)
		g.block(s.Else, sc.child(), inFunc)
	case *ast.NumberForStmt:
		g.exprs([]ast.Expr{s.Init, s.Limit, s.Step}, sc, inFunc)
		body := sc.child()
		body.declare(s.Name)
		g.block(s.Stmts, body, inFunc)
	case *ast.GenericForStmt:
		g.exprs(s.Exprs, sc, inFunc)
		body := sc.child()
		body.declare(s.Names...)
		g.block(s.Stmts, body, inFunc)
	case *ast.FuncDefStmt:
		self := false
		switch {
		case s.Name.Func == nil: // function a.b:m()
			g.expr(s.Name.Receiver, sc, inFunc)
			self = true
		default:
			if id, ok := s.Name.Func.(*ast.IdentExpr); ok {
				g.assign(id.Value, lineOf(id, s), sc, inFunc)
			} else {
				g.expr(s.Name.Func, sc, inFunc)
			}
		}
		g.function(s.Func, sc, self)
	case *ast.ReturnStmt:
		g.exprs(s.Exprs, sc, inFunc)
	}
}

// function walks a function body in a scope of its own holding its
// parameters (and self for a method).
func (g *globalsLint) function(f *ast.FunctionExpr, sc *lintScope, self bool) {
	body := sc.child()
	if self {
		body.declare("self")
	}
	if f.ParList != nil {
		body.declare(f.ParList.Names...)
	}
	g.block(f.Stmts, body, true)
}

func (g *globalsLint) exprs(es []ast.Expr, sc *lintScope, inFunc bool) {
	for _, e := range es {
		g.expr(e, sc, inFunc)
	}
}

// expr looks for function bodies inside an expression; nothing else in an
// expression assigns.
func (g *globalsLint) expr(e ast.Expr, sc *lintScope, inFunc bool) {
	switch e := e.(type) {
	case nil:
	case *ast.FunctionExpr:
		g.function(e, sc, false)
	case *ast.AttrGetExpr:
		g.expr(e.Object, sc, inFunc)
		g.expr(e.Key, sc, inFunc)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			g.expr(f.Key, sc, inFunc)
			g.expr(f.Value, sc, inFunc)
		}
	case *ast.FuncCallExpr:
		g.expr(e.Func, sc, inFunc)
		g.expr(e.Receiver, sc, inFunc)
		g.exprs(e.Args, sc, inFunc)
	case *ast.LogicalOpExpr:
		g.expr(e.Lhs, sc, inFunc)
		g.expr(e.Rhs, sc, inFunc)
	case *ast.RelationalOpExpr:
		g.expr(e.Lhs, sc, inFunc)
		g.expr(e.Rhs, sc, inFunc)
	case *ast.StringConcatOpExpr:
		g.expr(e.Lhs, sc, inFunc)
		g.expr(e.Rhs, sc, inFunc)
	case *ast.ArithmeticOpExpr:
		g.expr(e.Lhs, sc, inFunc)
		g.expr(e.Rhs, sc, inFunc)
	case *ast.UnaryMinusOpExpr:
		g.expr(e.Expr, sc, inFunc)
	case *ast.UnaryNotOpExpr:
		g.expr(e.Expr, sc, inFunc)
	case *ast.UnaryLenOpExpr:
		g.expr(e.Expr, sc, inFunc)
	}
}

// lineOf is n's line, or its statement's when the parser left it unset.
func lineOf(n, stmt ast.PositionHolder) int {
	if l := n.Line(); l > 0 {
		return l
	}
	return stmt.Line()
}
