package lua

import (
	"strconv"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// openTime builds the time module: wall-clock and monotonic seconds.
func (v *vm) openTime(L *glua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"now": func(L *glua.LState) int {
			L.Push(glua.LNumber(now()))
			return 1
		},
		"monotonic": func(L *glua.LState) int {
			L.Push(glua.LNumber(time.Since(v.eng.started).Seconds()))
			return 1
		},
	}))
	return 1
}

func itoa(i int) string { return strconv.Itoa(i) }
