package codec

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/plugins/store"
)

// TestRoundTrip: every value FromLua can make decodes to exactly itself,
// and the sizes in array headers are store.Size, which the Redis script
// trusts to enforce MaxValueBytes.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	values := []any{
		nil, true, false, 0.0, 1.0, -1.5, 0.1, 1e300, 5e-324, 1e21, 1e6, math.Inf(1), math.Inf(-1),
		"", "1", "\x00\xff;:,a1,2;", "ü", strings.Repeat("x", 1000),
		[]any{}, map[string]any{}, []any{nil, "1", 1.0, true, []any{}, map[string]any{}},
		map[string]any{"": "", "1": 1.0, "a;b": []any{"c"}, "k": nil, "m": map[string]any{"x": false}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		values = append(values, randomValue(r, 0))
	}
	for _, v := range values {
		b, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", v, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%q): %v", b, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip of %#v gave %#v (%q)", v, got, b)
		}
		if _, n, _ := Append(nil, v); n != store.Size(v) {
			t.Fatalf("size of %#v = %d, store.Size says %d", v, n, store.Size(v))
		}
		checkHeaders(t, b)
	}
	nan, err := Decode([]byte("nnan;"))
	if f, ok := nan.(float64); err != nil || !ok || !math.IsNaN(f) {
		t.Fatalf("NaN: %v, %v", nan, err)
	}
	if b, _ := Encode(math.NaN()); string(b) != "nnan;" {
		t.Fatalf("NaN encodes as %q", b)
	}
	for _, s := range []string{"-nan", "nan", "NaN", "inf", "-inf", "1.0000000000000001e+20", "0.10000000000000001", "1e+06"} {
		if _, err := ParseNumber(s); err != nil {
			t.Errorf("ParseNumber(%q): %v", s, err)
		}
	}
	if _, err := Encode(struct{}{}); err == nil {
		t.Fatal("Encode of a struct succeeded")
	}
}

// checkHeaders walks an encoded array's records the way the Redis push
// script does: by headers only.
func checkHeaders(t *testing.T, b []byte) {
	t.Helper()
	if len(b) == 0 || b[0] != TagArray {
		return
	}
	s := string(b[1:])
	count, rest, _ := strings.Cut(s, ",")
	size, rest, _ := strings.Cut(rest, ";")
	n, _ := strconv.Atoi(count)
	total, _ := strconv.Atoi(size)
	sum := 2
	for range n {
		l, r, _ := strings.Cut(rest, ",")
		es, r, _ := strings.Cut(r, ":")
		ln, _ := strconv.Atoi(l)
		e, _ := strconv.Atoi(es)
		sum += 1 + e
		rest = r[ln:]
	}
	if rest != "" || sum != total {
		t.Fatalf("records of %q: %d bytes left, sizes sum to %d, header says %d", b, len(rest), sum, total)
	}
}

func randomValue(r *rand.Rand, depth int) any {
	k := r.IntN(8)
	if depth > 4 {
		k = r.IntN(5)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return math.Float64frombits(r.Uint64())
	case 3:
		b := make([]byte, r.IntN(20))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	case 4:
		return float64(r.IntN(1000)) / 8
	case 5, 6:
		l := make([]any, r.IntN(6))
		for i := range l {
			l[i] = randomValue(r, depth+1)
		}
		return l
	}
	m := map[string]any{}
	for range r.IntN(6) {
		m[strconv.Itoa(r.IntN(100))+";"] = randomValue(r, depth+1)
	}
	return m
}

// TestDecodeCorrupt: bytes this package did not write are an error, never a
// panic or a wrong value.
func TestDecodeCorrupt(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "x", "hello", "n", "n1", "nabc;", "s", "s5:abc", "s-1:", "s1:ab", "a1,1;", "a1,3;1,1:z", "a1,3;2,1:z",
		"a99999999999999999,1;", "m1;", "m1;1:a", "m2;1:az", "tt", "a0,2;z",
		strings.Repeat("a1,1;1,1:", 300) + "z",
	} {
		if v, err := Decode([]byte(s)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%q) = %#v, %v", s, v, err)
		}
	}
}

// FuzzDecode: whatever the server holds, Decode returns a value that
// encodes back to the same bytes, or an error.
func FuzzDecode(f *testing.F) {
	for _, v := range []any{nil, 1.5, "x", []any{"a", []any{}}, map[string]any{"k": true}} {
		b, _ := Encode(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Encode(v); err != nil {
			t.Fatalf("decoded %#v does not encode: %v", v, err)
		}
	})
}
