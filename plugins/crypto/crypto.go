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
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"
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
	// HTTPClient fetches crypto.jwks documents. nil: DefaultHTTPClient(),
	// which allows https only (and http to loopback). The server passes
	// the client its [http] allow-list governs, so that key sets reach
	// what scripts may reach and nothing else. Whatever the client,
	// responses are cut at MaxJWKSBytes.
	HTTPClient *http.Client
	// JWKSRefresh is how often a key set is fetched again, unless the
	// script asks for another period; 0: DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is KeySetOptions.MinRefresh: 0 is
	// DefaultJWKSMinRefresh, negative no limit (tests).
	JWKSMinRefresh time.Duration
	// JWKSTimeout bounds each fetch; 0: DefaultJWKSTimeout.
	JWKSTimeout time.Duration
	// Logger hears about key set fetches; nil: slog.Default().
	Logger *slog.Logger
}

// Module is the crypto Lua module. It holds no per-script state, so one
// Module serves every LState concurrently. It caches the PEM keys scripts
// pass (parsed once), and owns the key sets they load with crypto.jwks: one
// per URL, shared by every VM and route and kept across reloads until
// Close (at most MaxKeySets).
type Module struct {
	now  func() time.Time
	opts Options
	// Parsed PEM keys; apart, so that a private key's text given to
	// jwt_verify raises instead of finding the parsed private key.
	pubKeys, privKeys keyCache

	mu     sync.Mutex
	sets   map[string]*moduleSet
	closed bool
}

// New returns the crypto module.
func New(opts Options) *Module {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Module{now: opts.Now, opts: opts, sets: make(map[string]*moduleSet)}
}

// Name is the name scripts require: "crypto".
func (m *Module) Name() string { return "crypto" }

// Open pushes a fresh module table. It is an lua.LGFunction meant for
// L.PreloadModule(m.Name(), m.Open).
func (m *Module) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 9)
	for name, fn := range map[string]lua.LGFunction{
		"sha256":        sha256Hex,
		"hmac_sha256":   hmacSHA256,
		"equal":         equal,
		"random":        random,
		"base64_encode": base64Encode,
		"base64_decode": base64Decode,
		"jwt_verify":    m.jwtVerify,
		"jwt_sign":      m.jwtSign,
	} {
		mod.RawSetString(name, L.NewFunction(fn))
	}
	// The key set metatable is this state's; __metatable keeps scripts
	// from reading or replacing it.
	mt := L.NewTable()
	mt.RawSetString("__metatable", lua.LString(keySetType))
	mt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		ks, ok := L.CheckUserData(1).Value.(*KeySet)
		if !ok {
			L.ArgError(1, keySetType+" expected")
		}
		L.Push(lua.LString(keySetType + "(" + ks.display + ")"))
		return 1
	}))
	mod.RawSetString("jwks", L.NewFunction(func(L *lua.LState) int { return m.jwks(L, mt) }))
	L.Push(mod)
	return 1
}

// Close stops the refreshes of every key set and waits for their fetches.
// crypto.jwks fails from then on.
func (m *Module) Close() error {
	m.mu.Lock()
	m.closed = true
	sets := m.sets
	m.sets = nil
	m.mu.Unlock()
	for _, ms := range sets {
		_ = ms.ks.Close()
	}
	return nil
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

func fail(L *lua.LState, msg string) int {
	L.Push(lua.LNil)
	L.Push(lua.LString(msg))
	return 2
}

var _ interface {
	Name() string
	Open(*lua.LState) int
} = (*Module)(nil)
