package luavalue

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// AppendJSON appends the JSON encoding of v to dst and returns the extended
// buffer; on error dst's new contents are undefined. It lives here, not in the
// json module, because jwt_sign needs byte-identical output and modules may
// not import each other.
//
// Shapes follow FromLua (arrays, objects, nil and Null as null, the same
// depth, cycle and key errors). On top of that: object keys are sorted, so
// equal tables encode to equal bytes (stable signatures, diffable output);
// whole numbers print without a fraction ("3", and plain digits up to 1e21,
// as encoding/json does); NaN and ±Inf fail with ErrNumber; invalid UTF-8 in
// strings becomes U+FFFD, so the output is always valid UTF-8 and can go out
// as a WebSocket text frame; <, > and & are not escaped, U+2028 and U+2029 are.
//
// maxLen, when > 0, bounds the bytes appended; see AppendJSONWith, of which
// AppendJSON is the short form.
func AppendJSON(dst []byte, v lua.LValue, maxDepth, maxLen int) ([]byte, error) {
	return AppendJSONWith(dst, v, Options{MaxDepth: maxDepth, MaxSize: maxLen})
}

// AppendJSONWith is AppendJSON with all of Options. o.MaxSize, when > 0,
// bounds the bytes appended: the length is checked as the output grows
// (before every value and every object key, which catches whatever came
// before, and before and after each string), so a failing encoding stops
// with ErrTooLarge having appended at most MaxSize plus one element and its
// punctuation. Forty references to one
// 64 MiB string, or 200 to one array of 100k numbers, cost about MaxSize,
// not gigabytes. Without MaxSize, DefaultMaxNodes bounds the walk instead.
func AppendJSONWith(dst []byte, v lua.LValue, o Options) ([]byte, error) {
	w := getWalker(o)
	defer putWalker(w)
	if o.MaxSize > 0 && o.MaxSize <= math.MaxInt-len(dst) {
		w.limit = len(dst) + o.MaxSize
	}
	dst, err := w.appendJSON(dst, v)
	if err == nil && len(dst) > w.limit {
		err = ErrTooLarge // the closing brackets after the last check
	}
	return dst, err
}

func (w *walker) appendJSON(dst []byte, v lua.LValue) ([]byte, error) {
	// Checked on the way into every value: this catches whatever the
	// previous value and the punctuation since added.
	if len(dst) > w.limit {
		return dst, ErrTooLarge
	}
	if err := w.visit(); err != nil {
		return dst, err
	}
	switch x := v.(type) {
	case *lua.LNilType:
		return append(dst, "null"...), nil
	case lua.LBool:
		return strconv.AppendBool(dst, bool(x)), nil
	case lua.LNumber:
		return appendNumber(dst, float64(x))
	case lua.LString:
		// Checked before and after: escaping can grow a string sixfold.
		if len(dst)+len(x) > w.limit {
			return dst, ErrTooLarge
		}
		if dst = appendString(dst, string(x)); len(dst) > w.limit {
			return dst, ErrTooLarge
		}
		return dst, nil
	case *lua.LTable:
		return w.appendTable(dst, x)
	}
	if IsNull(v) {
		return append(dst, "null"...), nil
	}
	return dst, fmt.Errorf("%w: %s", ErrType, v.Type())
}

func (w *walker) appendTable(dst []byte, t *lua.LTable) ([]byte, error) {
	if err := w.enter(t); err != nil {
		return dst, err
	}
	defer w.leave()
	start := len(w.keys)
	defer func() { w.keys = w.keys[:start] }()
	n, isArray, err := w.shape(t)
	if err != nil {
		return dst, err
	}
	if isArray {
		dst = append(dst, '[')
		for i := range n {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = w.appendJSON(dst, t.RawGetInt(i+1)); err != nil {
				return dst, atIndex(err, i+1)
			}
		}
		return append(dst, ']'), nil
	}
	dst = append(dst, '{')
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		k := w.keys[start+i]
		// Keys, like string values, before and after: a table can hold
		// one huge key, and be reached by many paths.
		if len(dst)+len(k) > w.limit {
			return dst, ErrTooLarge
		}
		if dst = appendString(dst, k); len(dst) > w.limit {
			return dst, ErrTooLarge
		}
		dst = append(dst, ':')
		if dst, err = w.appendJSON(dst, t.RawGetString(k)); err != nil {
			return dst, atKey(err, k)
		}
	}
	return append(dst, '}'), nil
}

// appendNumber formats like encoding/json's float64 encoder (the ES6 number
// to string rules) so that Lua and Go peers print the same number the same
// way.
func appendNumber(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, fmt.Errorf("%w: %s", ErrNumber, strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

const hexDigits = "0123456789abcdef"

func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not valid inside a JavaScript string literal.
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
