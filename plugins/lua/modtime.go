package lua

import (
	"strconv"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// openTime builds the time module: wall-clock and monotonic seconds.
func (v *vm) openTime(L *glua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"now": func(L *glua.LState) int {
			if vc := v.virtualClock(); vc != nil {
				L.Push(glua.LNumber(float64(vc.Now().UnixNano()) / 1e9))
				return 1
			}
			L.Push(glua.LNumber(now()))
			return 1
		},
		"monotonic": func(L *glua.LState) int {
			if vc := v.virtualClock(); vc != nil {
				// The virtual clock starts at the wall clock's time, after
				// the engine started: never negative.
				L.Push(glua.LNumber(vc.Now().Sub(v.eng.started).Seconds()))
				return 1
			}
			L.Push(glua.LNumber(time.Since(v.eng.started).Seconds()))
			return 1
		},
	}))
	return 1
}

func itoa(i int) string { return strconv.Itoa(i) }

// virtualClock is the virtual clock of the server the VM's route runs on
// (`moonwire test`), nil for the wall clock or before the route starts.
func (v *vm) virtualClock() *router.VirtualClock {
	if rt := v.route.rt; rt != nil {
		return rt.Server().Clock()
	}
	return nil
}
