package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count. In TOML it is either a plain non-negative integer
// (bytes) or a string: digits, optional spaces, and a unit. Binary units
// (B, KiB, MiB, GiB, TiB) are powers of 1024; decimal units (KB or kB, MB, GB,
// TB) are powers of 1000, as their names promise. Units are case-sensitive so
// that "Mb" (megabit) is not silently read as megabytes.
//
// Config fields are plain int64 after Load; Size is exported for plugins that
// decode their own raw sections and want the same syntax.
type Size int64

// UnmarshalTOML accepts an integer or a size string. It exists because
// encoding.TextUnmarshaler alone would see integers as text and lose the
// distinction between 100 and "100B" in error messages.
func (s *Size) UnmarshalTOML(v any) error {
	n, err := sizeValue(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// UnmarshalText parses the string form, for decoders other than TOML.
func (s *Size) UnmarshalText(text []byte) error {
	n, err := parseSize(string(text))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// String prints the largest binary unit that divides the size exactly, so a
// value read from "64KiB" prints back as "64KiB".
func (s Size) String() string {
	n := int64(s)
	if n == 0 {
		return "0B"
	}
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Duration is a time.Duration written in TOML as a Go duration string
// ("250ms", "5s", "1m30s"). Bare integers are refused: a bare 5 could mean
// seconds or nanoseconds, and guessing wrong is a silent outage.
//
// Config fields are plain time.Duration after Load; Duration is exported for
// plugins that decode their own raw sections.
type Duration time.Duration

// UnmarshalTOML accepts only a duration string.
func (d *Duration) UnmarshalTOML(v any) error {
	x, err := durationValue(v)
	if err != nil {
		return err
	}
	*d = Duration(x)
	return nil
}

// UnmarshalText parses a Go duration string, for decoders other than TOML.
func (d *Duration) UnmarshalText(text []byte) error {
	x, err := parseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(x)
	return nil
}

// String prints the Go duration syntax, which UnmarshalText reads back.
func (d Duration) String() string { return time.Duration(d).String() }

var sizeUnits = map[string]int64{
	"":    1,
	"B":   1,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
	"TiB": 1 << 40,
	"KB":  1000,
	"kB":  1000,
	"MB":  1000 * 1000,
	"GB":  1000 * 1000 * 1000,
	"TB":  1000 * 1000 * 1000 * 1000,
}

// sizeValue converts a decoded TOML value to a byte count.
func sizeValue(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("invalid size %d: must not be negative", x)
		}
		return x, nil
	case string:
		return parseSize(x)
	default:
		return 0, fmt.Errorf("must be an integer (bytes) or a size string like \"64KiB\", not %s", typeName(v))
	}
}

// parseSize parses "64KiB", "1 MiB", "512B", "100".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("invalid size %q: must not be negative", s)
		}
		return 0, fmt.Errorf("invalid size %q: want digits and a unit, like \"64KiB\"", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, unit)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// durationValue converts a decoded TOML value to a duration.
func durationValue(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("must be a duration string like \"5s\" or \"250ms\", not %s", typeName(v))
	}
	return parseDuration(s)
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		// time's own text repeats the input in a different quoting; say it
		// once, in our words, and keep time's error as the cause.
		return 0, &causeError{fmt.Sprintf("invalid duration %q: want a Go duration like \"5s\", \"250ms\" or \"1m30s\"", s), err}
	}
	return d, nil
}

// causeError carries a message of our own while keeping the underlying
// error reachable for errors.Is/As.
type causeError struct {
	msg string
	err error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.err }
