package lua

import (
	"context"
	"log/slog"
	"sort"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// openLog builds the log module: the server's structured log, tagged with
// the route and, inside a connection's callback, the connection.
func (v *vm) openLog(L *glua.LState) int {
	level := func(lv slog.Level) glua.LGFunction {
		return func(L *glua.LState) int {
			msg := L.CheckString(1)
			lg := v.logger()
			if !lg.Enabled(context.Background(), lv) {
				return 0
			}
			var attrs []any
			if fields, ok := L.Get(2).(*glua.LTable); ok {
				var keys []string
				vals := map[string]glua.LValue{}
				fields.ForEach(func(k, val glua.LValue) {
					ks := k.String()
					keys = append(keys, ks)
					vals[ks] = val
				})
				sort.Strings(keys)
				for _, k := range keys {
					attrs = append(attrs, k, logValue(vals[k]))
				}
			} else if L.Get(2) != glua.LNil {
				L.ArgError(2, "fields must be a table")
			}
			lg.Log(context.Background(), lv, msg, attrs...)
			return 0
		}
	}
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"debug": level(slog.LevelDebug),
		"info":  level(slog.LevelInfo),
		"warn":  level(slog.LevelWarn),
		"error": level(slog.LevelError),
	}))
	return 1
}

// maxLogTable bounds what a table field of a log line may expand to.
const maxLogTable = 64 << 10

func logValue(v glua.LValue) any {
	switch v := v.(type) {
	case glua.LString:
		return string(v)
	case glua.LNumber:
		return float64(v)
	case glua.LBool:
		return bool(v)
	case *glua.LTable:
		// A field is for reading in a log line: past 64 KiB (a table
		// shared many times counts each time) it is logged as its address.
		if g, err := luavalue.FromLuaWith(v, luavalue.Options{MaxSize: maxLogTable}); err == nil {
			return g
		}
	}
	return v.String()
}
