package luavalue

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// ToLua converts a Go value into a fresh Lua value owned by L; nothing in the
// result aliases v, so scripts may mutate it freely.
//
// Beyond the types in the package comment: lua.LValue passes through;
// json.Number becomes a number (±Inf when out of range, the string itself when
// not a number at all); time.Time becomes an RFC 3339 string with nanoseconds;
// time.Duration becomes seconds (the unit every Lua API here uses); named
// types, other slices and string-keyed maps are converted by reflection; a
// fmt.Stringer becomes its string; anything else becomes fmt.Sprint(v) rather
// than disappearing. A nil inside a slice becomes Null(L) so that positions
// are kept; a nil map value leaves its key out. v must not contain cycles.
func ToLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case lua.LValue:
		return x
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case []byte:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case float32:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case int8:
		return lua.LNumber(x)
	case int16:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case uint:
		return lua.LNumber(x)
	case uint8:
		return lua.LNumber(x)
	case uint16:
		return lua.LNumber(x)
	case uint32:
		return lua.LNumber(x)
	case uint64:
		return lua.LNumber(x)
	case uintptr:
		return lua.LNumber(x)
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return lua.LString(x)
		}
		return lua.LNumber(f)
	case time.Duration:
		return lua.LNumber(x.Seconds())
	case time.Time:
		return lua.LString(x.Format(time.RFC3339Nano))
	case []any:
		t := NewArray(L, len(x))
		for _, e := range x {
			t.Append(elem(L, ToLua(L, e)))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, ToLua(L, e))
		}
		return t
	case []string:
		t := NewArray(L, len(x))
		for _, e := range x {
			t.Append(lua.LString(e))
		}
		return t
	case []map[string]any: // BurntSushi/toml's shape for [[arrays.of.tables]]
		t := NewArray(L, len(x))
		for _, e := range x {
			t.Append(elem(L, ToLua(L, e)))
		}
		return t
	case map[string]string:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, lua.LString(e))
		}
		return t
	case fmt.Stringer:
		return lua.LString(x.String())
	}
	return reflectToLua(L, reflect.ValueOf(v))
}

// elem stands Null in for nil, because Append of LNil would leave a hole that
// shortens the array.
func elem(L *lua.LState, v lua.LValue) lua.LValue {
	if v == lua.LNil {
		return Null(L)
	}
	return v
}

func reflectToLua(L *lua.LState, rv reflect.Value) lua.LValue {
	switch rv.Kind() {
	case reflect.Bool:
		return lua.LBool(rv.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return lua.LNumber(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return lua.LNumber(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return lua.LNumber(rv.Float())
	case reflect.String:
		return lua.LString(rv.String())
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return lua.LNil
		}
		return ToLua(L, rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			return lua.LString(rv.Bytes())
		}
		n := rv.Len()
		t := NewArray(L, n)
		for i := range n {
			t.Append(elem(L, ToLua(L, rv.Index(i).Interface())))
		}
		return t
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		t := L.CreateTable(0, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			t.RawSetString(iter.Key().String(), ToLua(L, iter.Value().Interface()))
		}
		return t
	case reflect.Invalid:
		return lua.LNil
	}
	return lua.LString(fmt.Sprint(rv.Interface()))
}
