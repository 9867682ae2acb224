package lua

import (
	"bytes"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"

	"github.com/moonwire/moonwire/internal/editdist"
)

// Diagnostic is a warning about a script that loads and runs but probably
// does not do what its author meant: moonwire check prints it and, with
// -strict, fails on it.
type Diagnostic struct {
	File string // the script's path as shown to users
	Line int    // 0 when unknown
	Msg  string
	// Setting is the settings key an unread-setting diagnostic is about
	// ("" for the others). File and Line then name the route's script: the
	// caller, which knows where the config file defines the key, may
	// point there instead.
	Setting string
}

// String is "file:line: warning: message", the form of check's other
// warnings.
func (d Diagnostic) String() string {
	if d.Line > 0 {
		return d.File + ":" + strconv.Itoa(d.Line) + ": warning: " + d.Msg
	}
	return d.File + ": warning: " + d.Msg
}

// callbackNames are the names moonwire looks up in the table a route script
// returns (vm.go reads exactly these).
var callbackNames = []string{"on_handshake", "on_open", "on_message", "on_close", "on_start", "on_reload", "on_http"}

// Lint looks for likely mistakes in the route's script and the modules it
// requires: a returned callback name moonwire never calls (on_mesage), a
// settings key the scripts never read, and globals assigned inside
// functions (state every connection of a VM then shares). The route must
// be built (NewRoute) and not yet released: the callback check reads the
// table the script returned. The analysis is static and conservative: when
// a script reads ws.settings in a way it cannot follow (a computed key,
// pairs, passing the table on), it reports no unread settings.
func (r *Route) Lint() []Diagnostic {
	var ds []Diagnostic
	if len(r.vms) > 0 {
		ds = append(ds, r.lintCallbacks(r.vms[0].mod)...)
	}
	files, complete := r.lintSources()
	for _, f := range files {
		ds = append(ds, lintGlobals(f.chunk, f.display)...)
	}
	if complete && len(r.cfg.Settings) > 0 {
		reads, dynamic := settingsReads(files)
		if !dynamic {
			keys := make([]string, 0, len(r.cfg.Settings))
			for k := range r.cfg.Settings {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if reads[k] {
					continue
				}
				msg := fmt.Sprintf("route %s: settings.%s is never read by %s or the modules it requires", r.cfg.Pattern, k, r.cfg.Script)
				if near := nearestUnset(k, reads, r.cfg.Settings); near != "" {
					msg += "; did you mean " + near + "? (the script reads it, the config does not set it)"
				}
				ds = append(ds, Diagnostic{File: r.display(r.cfg.Script), Setting: k, Msg: msg})
			}
		}
	}
	// Deterministic: the returned table's keys come in map order.
	sort.SliceStable(ds, func(i, j int) bool {
		if ds[i].File != ds[j].File {
			return ds[i].File < ds[j].File
		}
		if ds[i].Line != ds[j].Line {
			return ds[i].Line < ds[j].Line
		}
		return ds[i].Msg < ds[j].Msg
	})
	return ds
}

// nearestUnset is the key the scripts read, the settings lack, and that
// is a likely typo of key (or key of it); "" if none.
func nearestUnset(key string, reads map[string]bool, settings map[string]any) string {
	best, dist := "", 3
	for r := range reads {
		if _, set := settings[r]; set {
			continue
		}
		if d := editdist.Distance(key, r); d < dist || d == dist && r < best {
			best, dist = r, d
		}
	}
	if dist > 2 {
		return ""
	}
	return best
}

// lintCallbacks reports the keys of the returned table that look like a
// callback but are none: anything starting with "on_" or "onX", and
// near-misses of a known name ("open" for "on_open").
func (r *Route) lintCallbacks(mod *glua.LTable) []Diagnostic {
	if mod == nil {
		return nil
	}
	known := make(map[string]bool, len(callbackNames))
	for _, c := range callbackNames {
		known[c] = true
	}
	var ds []Diagnostic
	mod.ForEach(func(k, v glua.LValue) {
		ks, ok := k.(glua.LString)
		name := string(ks)
		if !ok || known[name] {
			return
		}
		best, dist := closestCallback(name)
		looksLike := strings.HasPrefix(name, "on_") ||
			len(name) > 2 && strings.HasPrefix(name, "on") && name[2] >= 'A' && name[2] <= 'Z'
		if !looksLike && dist > 2 {
			return
		}
		msg := name + " is not a callback moonwire calls"
		if dist <= 3 {
			msg += "; did you mean " + best + "?"
		} else {
			msg += " (they are " + strings.Join(callbackNames, ", ") + ")"
		}
		d := Diagnostic{File: r.display(r.cfg.Script), Msg: msg}
		if f, ok := v.(*glua.LFunction); ok && f.Proto != nil {
			d.File, d.Line = f.Proto.SourceName, f.Proto.LineDefined
		} else {
			d.Line = firstMention(r.cfg.FS, r.cfg.Script, name)
		}
		ds = append(ds, d)
	})
	return ds
}

// closestCallback returns the known callback nearest to name, ignoring
// case and underscores (onMessage is on_message), and its distance.
func closestCallback(name string) (string, int) {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	best, dist := "", 1<<30
	for _, c := range callbackNames {
		d := editdist.Distance(norm(name), norm(c))
		if d2 := editdist.Distance(name, c); d2 < d {
			d = d2
		}
		if d < dist {
			best, dist = c, d
		}
	}
	return best, dist
}

// firstMention is the first line of file that has name as a whole word, 0
// if none: where a non-function field of the returned table is set.
func firstMention(fsys fs.FS, file, name string) int {
	src, err := fs.ReadFile(fsys, file)
	if err != nil {
		return 0
	}
	re := regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(name) + `($|[^A-Za-z0-9_])`)
	for i, line := range bytes.Split(src, []byte("\n")) {
		if re.Match(line) {
			return i + 1
		}
	}
	return 0
}

// lintFile is a parsed source: the route script or a module it requires.
type lintFile struct {
	path, display string
	chunk         []ast.Stmt
}

// lintSources parses the route script and, transitively, every module it
// requires by a literal name that resolves inside the scripts folder.
// complete is false when some require names its module with an
// expression: the scripts may then read settings in files not seen.
func (r *Route) lintSources() (files []lintFile, complete bool) {
	complete = true
	seen := map[string]bool{}
	// The script, and what its top level required (surely loaded).
	queue := append([]string{r.cfg.Script}, r.Files()...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		src, err := fs.ReadFile(r.cfg.FS, p)
		if err != nil {
			complete = false
			continue
		}
		chunk, err := parse.Parse(bytes.NewReader(src), r.display(p))
		if err != nil {
			complete = false // it compiled when loaded; changed since?
			continue
		}
		files = append(files, lintFile{path: p, display: r.display(p), chunk: chunk})
		named, called := 0, 0 // require as a name, and as the callee of a call
		walkStmts(chunk, func(e ast.Expr) {
			if isIdent(e, "require") {
				named++
			}
			call, ok := e.(*ast.FuncCallExpr)
			if !ok || !isIdent(call.Func, "require") {
				return
			}
			called++
			if len(call.Args) != 1 {
				complete = false
				return
			}
			name, ok := call.Args[0].(*ast.StringExpr)
			if !ok {
				complete = false
				return
			}
			if file, err := r.resolveModule(name.Value); err == nil {
				queue = append(queue, file)
			}
			// Otherwise a host module (json, store) or a require that
			// fails when it runs: no script source to read.
		})
		if named > called {
			complete = false // pcall(require, name), local r = require: cannot follow
		}
	}
	return files, complete
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.IdentExpr)
	return ok && id.Value == name
}

// walkStmts calls fn on every expression in stmts, outermost first.
func walkStmts(stmts []ast.Stmt, fn func(ast.Expr)) {
	for _, s := range stmts {
		walkStmt(s, fn)
	}
}

func walkStmt(s ast.Stmt, fn func(ast.Expr)) {
	exprs := func(es ...ast.Expr) {
		for _, e := range es {
			walkExpr(e, fn)
		}
	}
	switch s := s.(type) {
	case *ast.AssignStmt:
		exprs(s.Lhs...)
		exprs(s.Rhs...)
	case *ast.LocalAssignStmt:
		exprs(s.Exprs...)
	case *ast.FuncCallStmt:
		exprs(s.Expr)
	case *ast.DoBlockStmt:
		walkStmts(s.Stmts, fn)
	case *ast.WhileStmt:
		exprs(s.Condition)
		walkStmts(s.Stmts, fn)
	case *ast.RepeatStmt:
		walkStmts(s.Stmts, fn)
		exprs(s.Condition)
	case *ast.IfStmt:
		exprs(s.Condition)
		walkStmts(s.Then, fn)
		walkStmts(s.Else, fn)
	case *ast.NumberForStmt:
		exprs(s.Init, s.Limit, s.Step)
		walkStmts(s.Stmts, fn)
	case *ast.GenericForStmt:
		exprs(s.Exprs...)
		walkStmts(s.Stmts, fn)
	case *ast.FuncDefStmt:
		exprs(s.Name.Func, s.Name.Receiver, s.Func)
	case *ast.ReturnStmt:
		exprs(s.Exprs...)
	}
}

func walkExpr(e ast.Expr, fn func(ast.Expr)) {
	if e == nil {
		return
	}
	fn(e)
	switch e := e.(type) {
	case *ast.AttrGetExpr:
		walkExpr(e.Object, fn)
		walkExpr(e.Key, fn)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			walkExpr(f.Key, fn)
			walkExpr(f.Value, fn)
		}
	case *ast.FuncCallExpr:
		walkExpr(e.Func, fn)
		walkExpr(e.Receiver, fn)
		for _, a := range e.Args {
			walkExpr(a, fn)
		}
	case *ast.LogicalOpExpr:
		walkExpr(e.Lhs, fn)
		walkExpr(e.Rhs, fn)
	case *ast.RelationalOpExpr:
		walkExpr(e.Lhs, fn)
		walkExpr(e.Rhs, fn)
	case *ast.StringConcatOpExpr:
		walkExpr(e.Lhs, fn)
		walkExpr(e.Rhs, fn)
	case *ast.ArithmeticOpExpr:
		walkExpr(e.Lhs, fn)
		walkExpr(e.Rhs, fn)
	case *ast.UnaryMinusOpExpr:
		walkExpr(e.Expr, fn)
	case *ast.UnaryNotOpExpr:
		walkExpr(e.Expr, fn)
	case *ast.UnaryLenOpExpr:
		walkExpr(e.Expr, fn)
	case *ast.FunctionExpr:
		walkStmts(e.Stmts, fn)
	}
}
