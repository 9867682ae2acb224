package lua

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// ScriptError is a problem in a script, located as precisely as Lua allows.
// Its Error is "file:line: message", the form editors and `moonwire check`
// users expect.
type ScriptError struct {
	File      string // the script's path as shown to users
	Line      int    // 0 when unknown
	Msg       string
	Traceback string // Lua stack traceback, for runtime errors
	cause     error  // ErrTimeout for a stopped callback
}

// Unwrap returns ErrTimeout for a callback stopped by its deadline.
func (e *ScriptError) Unwrap() error { return e.cause }

// Error implements error.
func (e *ScriptError) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// compile parses and compiles a Lua source. name is the chunk name: the
// path users see in errors and tracebacks.
func compile(src []byte, name string) (*glua.FunctionProto, error) {
	chunk, err := parse.Parse(bytes.NewReader(src), name)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			line := pe.Pos.Line
			if line == parse.EOF {
				line = bytes.Count(src, []byte("\n")) + 1
			}
			msg := pe.Message
			if pe.Token != "" && pe.Pos.Line != parse.EOF {
				msg += " near '" + pe.Token + "'"
			}
			return nil, &ScriptError{File: name, Line: line, Msg: msg}
		}
		return nil, &ScriptError{File: name, Msg: err.Error()}
	}
	proto, err := glua.Compile(chunk, name)
	if err != nil {
		var ce *glua.CompileError
		if errors.As(err, &ce) {
			return nil, &ScriptError{File: name, Line: ce.Line, Msg: ce.Message}
		}
		return nil, &ScriptError{File: name, Msg: err.Error()}
	}
	return proto, nil
}

// loadScript reads and compiles path from fsys; display is the name used
// in messages. It also returns the source's SHA-256, for versioning.
func loadScript(fsys fs.FS, path, display string) (*glua.FunctionProto, [32]byte, error) {
	src, err := fs.ReadFile(fsys, path)
	if err != nil {
		return nil, [32]byte{}, &ScriptError{File: display, Msg: "cannot read script: " + errors.Unwrap(err).Error()}
	}
	proto, err := compile(src, display)
	return proto, sha256.Sum256(src), err
}

// Lua error values carry their position as a "chunk:line:" prefix.
var positionRE = regexp.MustCompile(`^(.+?):(\d+): (?s)(.*)$`)

// scriptErrorFrom turns a failed call into a ScriptError, finding the file
// and line in the error value or, failing that, the traceback.
func scriptErrorFrom(err error, fallback string) *ScriptError {
	var ae *glua.ApiError
	if !errors.As(err, &ae) {
		return &ScriptError{File: fallback, Msg: err.Error()}
	}
	msg := ae.Object.String()
	se := &ScriptError{File: fallback, Msg: msg, Traceback: strings.TrimSpace(ae.StackTrace)}
	if m := positionRE.FindStringSubmatch(msg); m != nil {
		if line, err := strconv.Atoi(m[2]); err == nil {
			se.File, se.Line, se.Msg = m[1], line, m[3]
			return se
		}
	}
	// error() with a non-string value, or level 0: locate via the traceback.
	for _, l := range strings.Split(se.Traceback, "\n") {
		l = strings.TrimSpace(l)
		if m := positionRE.FindStringSubmatch(l); m != nil && !strings.HasPrefix(l, "[G]") {
			if line, err := strconv.Atoi(m[2]); err == nil {
				se.File, se.Line = m[1], line
				break
			}
		}
	}
	return se
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
