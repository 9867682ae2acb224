// Package codec is the byte form of a store value on the network backends
// (plugins/store/redis, plugins/store/nats): what they write to the server
// and read back.
//
// A value is plain Go data as luavalue.FromLua makes it (nil, bool,
// float64, string, []any, map[string]any), and reading it back must give
// exactly that data again, as the memory backend, which keeps the Go value
// itself, does. JSON cannot: it loses bytes that are not UTF-8 inside
// strings, and Redis's Lua formats numbers with 14 digits. So the form is
// a small tagged one, where every value starts with a one-byte tag:
//
//	z                              nil (an array element or map value)
//	t  f                           true, false
//	n TEXT ;                       a number: shortest Go text, or any text
//	                               C's strtod reads ("inf", "-inf", "nan",
//	                               Lua's "%.17g")
//	s LEN : BYTES                  a string, LEN in decimal bytes
//	a COUNT , SIZE ; RECORD*       an array; SIZE is its store.Size;
//	                               RECORD is LEN , ESIZE : ELEMENT with
//	                               LEN the element's encoded length and
//	                               ESIZE its store.Size
//	m COUNT ; (LEN : KEY VALUE)*   a map, keys sorted
//
// The array form carries the sizes so that a Redis script can append to a
// list and drop its oldest elements, and enforce MaxValueBytes on the
// result, by reading headers only: it never parses an element. A number is
// compared as a number (Redis's Lua may write 0.1 as
// 0.10000000000000001), everything else byte for byte.
//
// It knows nothing of Redis, NATS, Lua or the store's API: it is a leaf.
package codec

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Tags: the first byte of every encoded value.
const (
	TagNil    = 'z'
	TagTrue   = 't'
	TagFalse  = 'f'
	TagNumber = 'n'
	TagString = 's'
	TagArray  = 'a'
	TagMap    = 'm'
)

// MaxDepth bounds nesting when decoding, so that corrupt or hostile bytes
// on the server cannot exhaust the stack. It is above luavalue's own
// bound on what a script can build (128).
const MaxDepth = 200

// ErrCorrupt is wrapped by Decode's errors: the bytes are not a value this
// package wrote.
var ErrCorrupt = errors.New("corrupt value")

// Encode returns the encoded form of v.
func Encode(v any) ([]byte, error) {
	b, _, err := appendValue(nil, v)
	return b, err
}

// Append appends the encoded form of v to dst and returns it with v's
// store.Size.
func Append(dst []byte, v any) ([]byte, int, error) { return appendValue(dst, v) }

// appendValue appends v and returns its size (the store.Size measure).
func appendValue(dst []byte, v any) ([]byte, int, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, TagNil), 1, nil
	case bool:
		if x {
			return append(dst, TagTrue), 1, nil
		}
		return append(dst, TagFalse), 1, nil
	case float64:
		dst = append(dst, TagNumber)
		dst = AppendNumber(dst, x)
		return append(dst, ';'), 8, nil
	case string:
		dst = append(dst, TagString)
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...), len(x), nil
	case []any:
		start := len(dst)
		size := 2
		for _, e := range x {
			at := len(dst)
			var n int
			var err error
			if dst, n, err = appendValue(dst, e); err != nil {
				return nil, 0, err
			}
			var hdr [48]byte
			h := strconv.AppendInt(hdr[:0], int64(len(dst)-at), 10)
			h = append(h, ',')
			h = strconv.AppendInt(h, int64(n), 10)
			h = append(h, ':')
			dst = insert(dst, at, h)
			size += 1 + n
		}
		var hdr [48]byte
		h := append(hdr[:0], TagArray)
		h = strconv.AppendInt(h, int64(len(x)), 10)
		h = append(h, ',')
		h = strconv.AppendInt(h, int64(size), 10)
		h = append(h, ';')
		return insert(dst, start, h), size, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, TagMap)
		dst = strconv.AppendInt(dst, int64(len(keys)), 10)
		dst = append(dst, ';')
		size := 2
		for _, k := range keys {
			dst = strconv.AppendInt(dst, int64(len(k)), 10)
			dst = append(dst, ':')
			dst = append(dst, k...)
			var n int
			var err error
			if dst, n, err = appendValue(dst, x[k]); err != nil {
				return nil, 0, err
			}
			size += 1 + len(k) + n
		}
		return dst, size, nil
	}
	return nil, 0, fmt.Errorf("codec: cannot encode a %T", v)
}

// insert inserts h into b at i.
func insert(b []byte, i int, h []byte) []byte {
	n := len(b)
	b = append(b, h...)
	copy(b[i+len(h):], b[i:n])
	copy(b[i:], h)
	return b
}

// AppendNumber appends f's text: the shortest that reads back as f, with
// the infinities and NaN spelled as C's strtod and Go's ParseFloat both
// read them (Go's own "+Inf" and "NaN" are not what Lua prints).
func AppendNumber(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// FormatNumber is AppendNumber to a string.
func FormatNumber(f float64) string { return string(AppendNumber(nil, f)) }

// ParseNumber reads a number written by AppendNumber or by C's printf
// ("%.17g", which may print "-nan").
func ParseNumber(s string) (float64, error) {
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case "nan":
		return math.NaN(), nil
	case "":
		return 0, fmt.Errorf("%w: empty number", ErrCorrupt)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: number %q", ErrCorrupt, s)
	}
	return f, nil
}

// Decode returns the value encoded in b, which must hold exactly one.
func Decode(b []byte) (any, error) {
	d := decoder{b: b}
	v, _, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.i != len(b) {
		return nil, d.errorf("%d bytes after the value", len(b)-d.i)
	}
	return v, nil
}

type decoder struct {
	b []byte
	i int
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrCorrupt, d.i, fmt.Sprintf(format, args...))
}

// count reads a decimal count up to the byte end.
func (d *decoder) count(end byte) (int, error) {
	start := d.i
	n := 0
	for d.i < len(d.b) && d.b[d.i] != end {
		c := d.b[d.i]
		if c < '0' || c > '9' || d.i-start >= 15 {
			return 0, d.errorf("bad length")
		}
		n = n*10 + int(c-'0')
		d.i++
	}
	if d.i == start || d.i == len(d.b) {
		return 0, d.errorf("bad length")
	}
	d.i++ // end
	return n, nil
}

// bytes reads n bytes.
func (d *decoder) bytes(n int) ([]byte, error) {
	if n > len(d.b)-d.i {
		return nil, d.errorf("truncated")
	}
	s := d.b[d.i : d.i+n]
	d.i += n
	return s, nil
}

// value reads one value and returns it with its store.Size, which the
// headers of an array must agree with: the Redis script trusts them.
func (d *decoder) value(depth int) (any, int, error) {
	if depth > MaxDepth {
		return nil, 0, d.errorf("nested deeper than %d", MaxDepth)
	}
	if d.i >= len(d.b) {
		return nil, 0, d.errorf("truncated")
	}
	tag := d.b[d.i]
	d.i++
	switch tag {
	case TagNil:
		return nil, 1, nil
	case TagTrue:
		return true, 1, nil
	case TagFalse:
		return false, 1, nil
	case TagNumber:
		end := strings.IndexByte(string(d.b[d.i:min(len(d.b), d.i+64)]), ';')
		if end < 0 {
			return nil, 0, d.errorf("unterminated number")
		}
		f, err := ParseNumber(string(d.b[d.i : d.i+end]))
		if err != nil {
			return nil, 0, err
		}
		d.i += end + 1
		return f, 8, nil
	case TagString:
		n, err := d.count(':')
		if err != nil {
			return nil, 0, err
		}
		s, err := d.bytes(n)
		return string(s), n, err
	case TagArray:
		n, err := d.count(',')
		if err != nil {
			return nil, 0, err
		}
		want, err := d.count(';')
		if err != nil {
			return nil, 0, err
		}
		if n > len(d.b)-d.i { // every element takes more than a byte
			return nil, 0, d.errorf("array of %d elements in %d bytes", n, len(d.b)-d.i)
		}
		out := make([]any, n)
		size := 2
		for k := range out {
			l, err := d.count(',')
			if err != nil {
				return nil, 0, err
			}
			es, err := d.count(':')
			if err != nil {
				return nil, 0, err
			}
			start := d.i
			var got int
			if out[k], got, err = d.value(depth + 1); err != nil {
				return nil, 0, err
			}
			if d.i-start != l || got != es {
				return nil, 0, d.errorf("element %d is %d bytes of size %d, its record says %d of %d", k+1, d.i-start, got, l, es)
			}
			size += 1 + got
		}
		if size != want {
			return nil, 0, d.errorf("array of size %d, its header says %d", size, want)
		}
		return out, size, nil
	case TagMap:
		n, err := d.count(';')
		if err != nil {
			return nil, 0, err
		}
		if n > len(d.b)-d.i {
			return nil, 0, d.errorf("map of %d keys in %d bytes", n, len(d.b)-d.i)
		}
		out := make(map[string]any, n)
		size := 2
		for range n {
			l, err := d.count(':')
			if err != nil {
				return nil, 0, err
			}
			k, err := d.bytes(l)
			if err != nil {
				return nil, 0, err
			}
			if _, dup := out[string(k)]; dup {
				return nil, 0, d.errorf("key %q twice", k)
			}
			v, n, err := d.value(depth + 1)
			if err != nil {
				return nil, 0, err
			}
			out[string(k)] = v
			size += 1 + l + n
		}
		return out, size, nil
	}
	return nil, 0, d.errorf("unknown tag %q", tag)
}

// Sample returns a value of the type tag stands for, so that an error about
// a stored value can name its type as the memory backend does without
// decoding it; false for a tag this package does not write.
func Sample(tag byte) (any, bool) {
	switch tag {
	case TagNil:
		return nil, true
	case TagString:
		return "", true
	case TagTrue:
		return true, true
	case TagFalse:
		return false, true
	case TagNumber:
		return 0.0, true
	case TagArray:
		return []any{}, true
	case TagMap:
		return map[string]any{}, true
	}
	return nil, false
}
