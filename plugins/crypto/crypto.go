package crypto

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// MaxRandomBytes bounds random(n): enough for any key or token, small enough
// that a script cannot use it to allocate without limit.
const MaxRandomBytes = 1024

// MaxClaimsBytes bounds the JSON of jwt_sign's claims, which fails past it
// with "jwt: claims: encoding too large". It is json.encode's default output
// limit, so whatever encodes by default can be signed; without a bound a
// table reaching one big table by many paths would make gigabytes.
const MaxClaimsBytes = 16 << 20

// Options configure the module. The zero value is ready for production.
type Options struct {
	// Now is the clock jwt_verify checks exp and nbf against; nil means
	// time.Now. Tests inject a fixed clock.
	Now func() time.Time
}

// Module is the crypto Lua module. It holds no secrets and no per-script
// state, so one Module serves every LState concurrently.
type Module struct {
	now func() time.Time
}

// New returns the crypto module.
func New(opts Options) *Module {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Module{now: opts.Now}
}

// Name is the name scripts require: "crypto".
func (m *Module) Name() string { return "crypto" }

// Open pushes a fresh module table. It is an lua.LGFunction meant for
// L.PreloadModule(m.Name(), m.Open).
func (m *Module) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 8)
	for name, fn := range map[string]lua.LGFunction{
		"sha256":        sha256Hex,
		"hmac_sha256":   hmacSHA256,
		"equal":         equal,
		"random":        random,
		"base64_encode": base64Encode,
		"base64_decode": base64Decode,
		"jwt_verify":    m.jwtVerify,
		"jwt_sign":      jwtSign,
	} {
		mod.RawSetString(name, L.NewFunction(fn))
	}
	L.Push(mod)
	return 1
}

// sha256(s) -> hex
func sha256Hex(L *lua.LState) int {
	sum := sha256.Sum256([]byte(L.CheckString(1)))
	L.Push(lua.LString(hex.EncodeToString(sum[:])))
	return 1
}

// hmac_sha256(key, s) -> hex
func hmacSHA256(L *lua.LState) int {
	key, msg := L.CheckString(1), L.CheckString(2)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(msg))
	L.Push(lua.LString(hex.EncodeToString(mac.Sum(nil))))
	return 1
}

// equal(a, b) -> boolean. The time taken depends on the lengths only, never
// on where the contents differ; lengths are assumed public.
func equal(L *lua.LState) int {
	a, b := L.CheckString(1), L.CheckString(2)
	L.Push(lua.LBool(subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1))
	return 1
}

// random(n) -> 2n hex digits from crypto/rand
func random(L *lua.LState) int {
	n := float64(L.CheckNumber(1))
	if n != math.Trunc(n) || n < 1 || n > MaxRandomBytes {
		L.ArgError(1, fmt.Sprintf("byte count must be a whole number from 1 to %d", MaxRandomBytes))
	}
	b := make([]byte, int(n))
	rand.Read(b) // never fails since Go 1.24: it crashes the program instead
	L.Push(lua.LString(hex.EncodeToString(b)))
	return 1
}

// base64_encode(s) -> standard alphabet, padded
func base64Encode(L *lua.LState) int {
	L.Push(lua.LString(base64.StdEncoding.EncodeToString([]byte(L.CheckString(1)))))
	return 1
}

// base64_decode(s) -> string | nil, err
func base64Decode(L *lua.LState) int {
	b, err := DecodeBase64(L.CheckString(1))
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(lua.LString(b))
	return 1
}

// DecodeBase64 accepts the spellings clients actually send: the standard or
// the URL-safe alphabet (the latter recognised by '-' or '_'), padded or not
// (padding, when present, must be complete). CR and LF are ignored, as MIME
// line breaks. Mixing alphabets or wrong padding is an error whose text is
// shown to scripts: "base64: invalid input at byte N".
func DecodeBase64(s string) ([]byte, error) {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if !strings.HasSuffix(strings.TrimRight(s, "\r\n"), "=") {
		enc = enc.WithPadding(base64.NoPadding)
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		var cie base64.CorruptInputError
		if errors.As(err, &cie) {
			return nil, fmt.Errorf("base64: invalid input at byte %d", int64(cie))
		}
		return nil, fmt.Errorf("base64: %w", err)
	}
	return b, nil
}

// jwt_verify(token, secret [, {leeway=, iss=, aud=, require_exp=}]) -> claims | nil, err
func (m *Module) jwtVerify(L *lua.LState) int {
	token := L.CheckString(1)
	secret := L.CheckString(2)
	if secret == "" {
		// A missing setting must not turn into "accept every token signed
		// with the empty key".
		L.ArgError(2, "secret must not be empty")
	}
	opts := verifyOptions(L, 3)
	claims, err := VerifyHS256(token, []byte(secret), m.now(), opts)
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(luavalue.ToLua(L, claims))
	return 1
}

// verifyOptions reads the options table strictly: a misspelt option would
// otherwise silently switch a check off.
func verifyOptions(L *lua.LState, n int) VerifyOptions {
	var opts VerifyOptions
	t := L.OptTable(n, nil)
	if t == nil {
		return opts
	}
	for k, v := t.Next(lua.LNil); k != lua.LNil; k, v = t.Next(k) {
		switch k.String() {
		case "leeway":
			s, ok := v.(lua.LNumber)
			if !ok || s < 0 || math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
				L.ArgError(n, "leeway must be a non-negative number of seconds")
			}
			opts.Leeway = time.Duration(float64(s) * float64(time.Second))
		case "iss":
			s, ok := v.(lua.LString)
			if !ok {
				L.ArgError(n, "iss must be a string")
			}
			opts.Issuer = string(s)
		case "aud":
			s, ok := v.(lua.LString)
			if !ok {
				L.ArgError(n, "aud must be a string")
			}
			opts.Audience = string(s)
		case "require_exp":
			b, ok := v.(lua.LBool)
			if !ok {
				L.ArgError(n, "require_exp must be a boolean")
			}
			opts.RequireExp = bool(b)
		default:
			L.ArgError(n, fmt.Sprintf("unknown option %q (want leeway, iss, aud or require_exp)", k.String()))
		}
	}
	return opts
}

// jwt_sign(claims, secret) -> token | nil, err
func jwtSign(L *lua.LState) int {
	claims := L.CheckTable(1)
	secret := L.CheckString(2)
	if secret == "" {
		L.ArgError(2, "secret must not be empty")
	}
	// The context so that a handler timeout ends a long encoding, which
	// the VM cannot interrupt (a table reached by many paths).
	payload, err := luavalue.AppendJSONWith(nil, claims, luavalue.Options{
		MaxSize: MaxClaimsBytes,
		Context: L.Context(),
	})
	if err != nil {
		return fail(L, "jwt: claims: "+err.Error())
	}
	if payload[0] != '{' {
		return fail(L, "jwt: claims must be an object, not an array")
	}
	token, err := SignHS256(payload, []byte(secret))
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(lua.LString(token))
	return 1
}

func fail(L *lua.LState, msg string) int {
	L.Push(lua.LNil)
	L.Push(lua.LString(msg))
	return 2
}

var _ interface {
	Name() string
	Open(*lua.LState) int
} = (*Module)(nil)
