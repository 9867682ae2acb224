package crypto

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

// fixedNow is 2024-01-01T00:00:00Z; tests speak of it as the Lua global NOW.
var fixedNow = time.Unix(1704067200, 0)

const prelude = luatest.Asserts + `
local crypto = require "crypto"
local NOW = 1704067200
local function b64url(s)
	return (crypto.base64_encode(s):gsub("%+", "-"):gsub("/", "_"):gsub("=", ""))
end
local function unhex(h)
	return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end
-- token builds a JWS by hand, for headers jwt_sign would never write.
local function token(header, payload, secret)
	local signing = b64url(header) .. "." .. b64url(payload)
	local sig = secret and b64url(unhex(crypto.hmac_sha256(secret, signing))) or ""
	return signing .. "." .. sig
end
`

func TestLua(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
	}{
		{"sha256", `
			eq(crypto.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
			eq(crypto.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
			raises("bad argument #1", crypto.sha256)`},
		{"hmac_sha256 RFC 4231 case 2", `
			eq(crypto.hmac_sha256("Jefe", "what do ya want for nothing?"),
				"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
			raises("bad argument #2", crypto.hmac_sha256, "key")`},
		{"equal", `
			eq(crypto.equal("abc", "abc"), true)
			eq(crypto.equal("abc", "abd"), false)
			eq(crypto.equal("abc", "abcd"), false, "different lengths")
			eq(crypto.equal("", ""), true)
			eq(crypto.equal("", "a"), false)
			eq(crypto.equal("\0\255", "\0\255"), true)
			raises("bad argument #2", crypto.equal, "a")`},
		{"random", `
			eq(#crypto.random(1), 2)
			eq(#crypto.random(16), 32)
			eq(#crypto.random(1024), 2048)
			assert(crypto.random(32):match("^[0-9a-f]+$"))
			assert(crypto.random(16) ~= crypto.random(16))
			raises("bad argument #1", crypto.random, 0)
			raises("whole number from 1 to 1024", crypto.random, 1025)
			raises("whole number from 1 to 1024", crypto.random, 1.5)
			raises("whole number from 1 to 1024", crypto.random, -1)
			raises("number expected", crypto.random, "x")
			raises("number expected", crypto.random)`},
		{"base64", `
			eq(crypto.base64_encode("hello"), "aGVsbG8=")
			eq(crypto.base64_encode(""), "")
			eq(crypto.base64_encode("\251\255"), "+/8=")
			eq(crypto.base64_decode("aGVsbG8="), "hello")
			eq(crypto.base64_decode("aGVsbG8"), "hello", "unpadded")
			eq(crypto.base64_decode("+/8="), "\251\255")
			eq(crypto.base64_decode("-_8"), "\251\255", "url alphabet, unpadded")
			eq(crypto.base64_decode("-_8="), "\251\255", "url alphabet, padded")
			eq(crypto.base64_decode("aGVs\r\nbG8="), "hello", "line breaks")
			eq(crypto.base64_decode(""), "")
			local all = {}
			for i = 0, 255 do all[#all + 1] = string.char(i) end
			all = table.concat(all)
			eq(crypto.base64_decode(crypto.base64_encode(all)), all, "round trip")`},
		{"base64 bad input", `
			fails("base64: invalid input at byte 0", crypto.base64_decode("a"))
			fails("base64: invalid input at byte 3", crypto.base64_decode("ab="))
			fails("base64: invalid input at byte 0", crypto.base64_decode("!!!!"))
			fails("base64: invalid input at byte 0", crypto.base64_decode("+-AA"))
			fails("base64: invalid input at byte 4", crypto.base64_decode("aGVs=G8="))
			raises("string expected, got nil", crypto.base64_decode)`},
		{"jwt round trip", `
			local tok = crypto.jwt_sign({sub = "u1", roles = {"a", "b"}, meta = {n = 1.5, ok = true}, exp = NOW + 60}, "s3cret")
			eq(select(2, tok:gsub("%.", "")), 2, "three segments")
			local c = assert(crypto.jwt_verify(tok, "s3cret"))
			eq(c.sub, "u1")
			eq(#c.roles, 2)
			eq(c.roles[2], "b")
			eq(getmetatable(c.roles).__jsontype, "array")
			eq(c.meta.n, 1.5)
			eq(c.meta.ok, true)
			eq(c.exp, NOW + 60)`},
		{"jwt_sign is deterministic", `
			eq(crypto.jwt_sign({b = 1, a = 2}, "k"), crypto.jwt_sign({a = 2, b = 1}, "k"))
			eq(crypto.jwt_sign({}, "k"):sub(1, 36), "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9")`},
		{"jwt.io vector", `
			local tok = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
			local c = assert(crypto.jwt_verify(tok, "your-256-bit-secret"))
			eq(c.name, "John Doe")
			eq(c.iat, 1516239022)
			fails("jwt: bad signature", crypto.jwt_verify(tok, "your-256-bit-secreT"))`},
		{"jwt expired", `
			fails("jwt: expired", crypto.jwt_verify(crypto.jwt_sign({exp = NOW - 1}, "k"), "k"))
			fails("jwt: expired", crypto.jwt_verify(crypto.jwt_sign({exp = NOW}, "k"), "k"))
			assert(crypto.jwt_verify(crypto.jwt_sign({exp = NOW + 1}, "k"), "k"))
			assert(crypto.jwt_verify(crypto.jwt_sign({exp = NOW + 0.5}, "k"), "k"), "fractional")
			fails("jwt: malformed", crypto.jwt_verify(crypto.jwt_sign({exp = "soon"}, "k"), "k"))`},
		{"jwt nbf", `
			fails("jwt: not yet valid", crypto.jwt_verify(crypto.jwt_sign({nbf = NOW + 5}, "k"), "k"))
			assert(crypto.jwt_verify(crypto.jwt_sign({nbf = NOW}, "k"), "k"))
			assert(crypto.jwt_verify(crypto.jwt_sign({nbf = NOW - 5}, "k"), "k"))
			fails("jwt: malformed", crypto.jwt_verify(crypto.jwt_sign({nbf = true}, "k"), "k"))`},
		{"jwt leeway", `
			local old = crypto.jwt_sign({exp = NOW - 5}, "k")
			assert(crypto.jwt_verify(old, "k", {leeway = 10}))
			assert(crypto.jwt_verify(old, "k", {leeway = 5.5}))
			fails("jwt: expired", crypto.jwt_verify(old, "k", {leeway = 5}))
			fails("jwt: expired", crypto.jwt_verify(old, "k", {leeway = 3}))
			local early = crypto.jwt_sign({nbf = NOW + 5}, "k")
			assert(crypto.jwt_verify(early, "k", {leeway = 5}))
			fails("jwt: not yet valid", crypto.jwt_verify(early, "k", {leeway = 4}))
			fails("jwt: not yet valid", crypto.jwt_verify(early, "k", {}))`},
		{"jwt require_exp", `
			local forever = crypto.jwt_sign({sub = "u1"}, "k")
			assert(crypto.jwt_verify(forever, "k"))
			assert(crypto.jwt_verify(forever, "k", {require_exp = false}))
			fails("jwt: no exp claim", crypto.jwt_verify(forever, "k", {require_exp = true}))
			assert(crypto.jwt_verify(crypto.jwt_sign({exp = NOW + 60}, "k"), "k", {require_exp = true}))
			raises("require_exp must be a boolean", crypto.jwt_verify, forever, "k", {require_exp = 1})`},
		{"jwt bad signature", `
			local tok = crypto.jwt_sign({sub = "u1"}, "k")
			fails("jwt: bad signature", crypto.jwt_verify(tok, "k2"))
			local h, p, s = tok:match("^([^.]+)%.([^.]+)%.([^.]+)$")
			fails("jwt: bad signature", crypto.jwt_verify(h .. "." .. b64url('{"sub":"admin"}') .. "." .. s, "k"))
			fails("jwt: bad signature", crypto.jwt_verify(h .. "." .. p .. ".", "k")) -- empty signature
			fails("jwt: bad signature", crypto.jwt_verify(h .. "." .. p .. "." .. s:sub(1, 20), "k")) -- short signature`},
		{"jwt alg none and others", `
			fails("jwt: unsupported alg none", crypto.jwt_verify(token('{"alg":"none"}', '{"sub":"admin"}'), "k"))
			fails("jwt: unsupported alg none", crypto.jwt_verify(token('{"alg":"none"}', '{"sub":"admin"}', "k"), "k"))
			fails("jwt: unsupported alg RS256", crypto.jwt_verify(token('{"alg":"RS256","typ":"JWT"}', '{}', "k"), "k"))
			fails("jwt: unsupported alg hs256", crypto.jwt_verify(token('{"alg":"hs256"}', '{}', "k"), "k"))
			fails("jwt: unsupported alg HS512", crypto.jwt_verify(token('{"alg":"HS512"}', '{}', "k"), "k"))
			fails('jwt: unsupported alg "HS256\\n"', crypto.jwt_verify(token('{"alg":"HS256\\n"}', '{}', "k"), "k"))
			fails('jwt: unsupported alg ""', crypto.jwt_verify(token('{"alg":""}', '{}', "k"), "k"))
			fails("jwt: unsupported crit header", crypto.jwt_verify(token('{"alg":"HS256","crit":["b64"],"b64":false}', '{}', "k"), "k"))
			assert(crypto.jwt_verify(token('{"alg":"HS256"}', '{"x":1}', "k"), "k"), "typ is optional")`},
		{"jwt malformed", `
			local good = crypto.jwt_sign({}, "k")
			local h, p, s = good:match("^([^.]+)%.([^.]+)%.([^.]+)$")
			for _, bad in ipairs({
				"", "abc", "a.b", good .. ".x", "..",
				"!!." .. p .. "." .. s,                                 -- header not base64
				b64url("not json") .. "." .. p .. "." .. s,              -- header not JSON
				b64url("[1]") .. "." .. p .. "." .. s,                   -- header not an object
				b64url('{"typ":"JWT"}') .. "." .. p .. "." .. s,         -- no alg
				b64url('{"alg":256}') .. "." .. p .. "." .. s,           -- alg not a string
				b64url('{"alg":"HS256"} x') .. "." .. p .. "." .. s,     -- trailing data
				h .. "." .. p .. "." .. s .. "=",                        -- padded signature
				h .. "." .. p .. "." .. s:sub(1, 10) .. "\r\n" .. s:sub(11), -- line break
				" " .. good,                                             -- space
				h .. "." .. p .. "." .. s:gsub("_", "/"):gsub("%-", "+"), -- std alphabet
			}) do
				local v, err = crypto.jwt_verify(bad, "k")
				if v ~= nil or err ~= "jwt: malformed" then
					-- the std-alphabet case only differs when s has - or _
					if not (err == nil and not s:find("[-_]")) then
						error(string.format("%q: got %s, %s", bad, tostring(v), tostring(err)))
					end
				end
			end
			fails("jwt: malformed", crypto.jwt_verify(token('{"alg":"HS256"}', '[1,2]', "k"), "k")) -- claims not an object
			fails("jwt: malformed", crypto.jwt_verify(token('{"alg":"HS256"}', 'nope', "k"), "k")) -- claims not JSON
			fails("jwt: token too large", crypto.jwt_verify(string.rep("a", 16 * 1024 + 1), "k"))`},
		{"jwt issuer and audience", `
			local tok = crypto.jwt_sign({iss = "moonwire", aud = {"chat", "monitor"}}, "k")
			assert(crypto.jwt_verify(tok, "k", {iss = "moonwire", aud = "chat"}))
			assert(crypto.jwt_verify(tok, "k", {aud = "monitor"}))
			fails("jwt: bad issuer", crypto.jwt_verify(tok, "k", {iss = "other"}))
			fails("jwt: bad audience", crypto.jwt_verify(tok, "k", {aud = "admin"}))
			local one = crypto.jwt_sign({aud = "chat"}, "k")
			assert(crypto.jwt_verify(one, "k", {aud = "chat"}))
			fails("jwt: bad issuer", crypto.jwt_verify(one, "k", {iss = "moonwire"})) -- missing iss`},
		{"jwt argument errors raise", `
			local tok = crypto.jwt_sign({}, "k")
			raises("secret must not be empty", crypto.jwt_verify, tok, "")
			raises("bad argument #2", crypto.jwt_verify, tok)
			raises("bad argument #1", crypto.jwt_verify, nil, "k")
			raises('unknown option "leway"', crypto.jwt_verify, tok, "k", {leway = 5})
			raises("leeway must be a non-negative number", crypto.jwt_verify, tok, "k", {leeway = -1})
			raises("leeway must be a non-negative number", crypto.jwt_verify, tok, "k", {leeway = "5"})
			raises("iss must be a string", crypto.jwt_verify, tok, "k", {iss = 5})
			raises("table expected, got string", crypto.jwt_verify, tok, "k", "opts")
			raises("secret must not be empty", crypto.jwt_sign, {}, "")
			raises("table expected, got string", crypto.jwt_sign, "claims", "k")`},
		{"jwt_sign bad claims", `
			fails("jwt: claims must be an object, not an array", crypto.jwt_sign({1, 2}, "k"))
			fails("jwt: claims: unsupported value type: function at $.f", crypto.jwt_sign({f = print}, "k"))
			local t = {}
			t.t = t
			fails("jwt: claims: table contains a cycle at $.t", crypto.jwt_sign(t, "k"))`},
	}
	m := New(Options{Now: func() time.Time { return fixedNow }})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			luatest.Run(t, luatest.NewState(t, m), prelude, tt.code)
		})
	}
}

func TestVerifyHS256(t *testing.T) {
	t.Parallel()
	secret := []byte("k")
	sign := func(payload string) string {
		tok, err := SignHS256([]byte(payload), secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name  string
		token string
		opts  VerifyOptions
		want  error
	}{
		{"valid", sign(`{"exp":1704067201}`), VerifyOptions{}, nil},
		{"expired", sign(`{"exp":1704067200}`), VerifyOptions{}, ErrExpired},
		{"expired within leeway", sign(`{"exp":1704067190}`), VerifyOptions{Leeway: 11 * time.Second}, nil},
		{"not yet valid", sign(`{"nbf":1704067201}`), VerifyOptions{}, ErrNotYetValid},
		{"huge exp", sign(`{"exp":1e400}`), VerifyOptions{}, ErrMalformed},
		{"alg", "eyJhbGciOiJub25lIn0.e30.", VerifyOptions{}, ErrUnsupportedAlg},
		{"too large", strings.Repeat("x", MaxTokenBytes+1), VerifyOptions{}, ErrTokenTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := VerifyHS256(tt.token, secret, fixedNow, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyHS256 = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := VerifyHS256(sign(`{}`), nil, fixedNow, VerifyOptions{}); !errors.Is(err, ErrEmptySecret) {
		t.Fatalf("empty secret: %v", err)
	}
	if _, err := SignHS256([]byte(`{}`), nil); !errors.Is(err, ErrEmptySecret) {
		t.Fatalf("SignHS256 empty secret: %v", err)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	m := New(Options{})
	if m.Name() != "crypto" || m.now == nil {
		t.Fatal("New(Options{}) is not ready to use")
	}
	L := luatest.NewState(t, m)
	// Real clock: a token valid for an hour from now verifies.
	err := L.DoString(`
		local crypto = require "crypto"
		local tok = crypto.jwt_sign({exp = 4102444800}, "k") -- 2100-01-01
		assert(crypto.jwt_verify(tok, "k"))
	`)
	if err != nil {
		t.Fatal(err)
	}
}

var fuzzErrs = []error{ErrMalformed, ErrTokenTooLarge, ErrUnsupportedAlg, ErrCrit, ErrBadSignature, ErrExpired, ErrNotYetValid}

// FuzzJWTVerify feeds arbitrary tokens through the Lua binding: it must never
// raise or panic, every failure must be one of the documented errors, and
// every success must carry the one canonical signature for its first two
// segments (so a verified token cannot be re-spelt).
func FuzzJWTVerify(f *testing.F) {
	const secret = "fuzz-secret"
	for _, p := range []string{`{}`, `{"sub":"u1","exp":1704067260,"nbf":1704067100}`, `{"exp":1704067100}`, `{"a":[1,null,{"b":{}}]}`} {
		tok, _ := SignHS256([]byte(p), []byte(secret))
		f.Add(tok)
	}
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	m := New(Options{Now: func() time.Time { return fixedNow }})
	L := luatest.NewState(f, m)
	if err := L.DoString(`crypto = require "crypto"`); err != nil {
		f.Fatal(err)
	}
	verify := L.GetGlobal("crypto").(*lua.LTable).RawGetString("jwt_verify")
	f.Fuzz(func(t *testing.T, token string) {
		if err := L.CallByParam(lua.P{Fn: verify, NRet: 2, Protect: true}, lua.LString(token), lua.LString(secret)); err != nil {
			t.Fatalf("jwt_verify(%q) raised: %v", token, err)
		}
		claims, msg := L.Get(-2), L.Get(-1)
		L.Pop(2)
		// What the binding calls for a secret: Verify with the key alone,
		// every alg allowed (VerifyHS256 allows HS256 only, so it refuses
		// an RS256 token with a crit header for its alg where the binding
		// refuses it for its crit).
		_, err := Verify(token, SingleKey{[]byte(secret)}, fixedNow, VerifyOptions{})
		if claims == lua.LNil {
			if err == nil || msg.String() != err.Error() {
				t.Fatalf("Lua says %v, Go says %v", msg, err)
			}
			known := false
			for _, e := range fuzzErrs {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Lua accepted %q, Go says %v", token, err)
		}
		i := strings.LastIndexByte(token, '.')
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(token[:i]))
		if want := base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); token[i+1:] != want {
			t.Fatalf("accepted non-canonical signature %q, want %q", token[i+1:], want)
		}
	})
}

func BenchmarkJWTVerify(b *testing.B) {
	tok, _ := SignHS256([]byte(`{"sub":"u1","exp":1704067260}`), []byte("k"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyHS256(tok, []byte("k"), fixedNow, VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestJWTSignClaimsBounded: jwt_sign encoded its claims without a bound, so
// a table reaching one big table by many paths made a payload (and a token)
// of any size; it now stops at MaxClaimsBytes.
func TestJWTSignClaimsBounded(t *testing.T) {
	t.Parallel()
	luatest.Run(t, luatest.NewState(t, New(Options{})), prelude, `
		local a = {} for i = 1, 100000 do a[i] = i end -- 588896 bytes of JSON
		local claims = {}
		for i = 1, 20 do claims["k" .. i] = a end
		local tok, err = crypto.jwt_sign(claims, "k")
		eq(err, nil, "20 references")
		eq(#tok > 20 * 588896, true, "20 references")
		for i = 21, 30 do claims["k" .. i] = a end
		fails("jwt: claims: encoding too large", crypto.jwt_sign(claims, "k"))`)
}

// TestJWTSignStopsWhenCancelled: encoding claims that reach one table by
// many paths takes long within MaxClaimsBytes too, so jwt_sign polls the
// state's context and a handler timeout ends it midway. The call is made
// from Go because the VM would stop at its first instruction under a
// cancelled context; inside a builtin, only the builtin can notice.
func TestJWTSignStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	L := luatest.NewState(t, New(Options{}))
	if err := L.DoString(`crypto = require "crypto"
		local d = {} for i = 1, 20 do d = {d, d} end
		claims = {d = d}`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	L.SetContext(ctx)
	defer L.RemoveContext()
	fn := L.GetField(L.GetGlobal("crypto"), "jwt_sign")
	if err := L.CallByParam(lua.P{Fn: fn, NRet: 2, Protect: true}, L.GetGlobal("claims"), lua.LString("k")); err != nil {
		t.Fatal(err)
	}
	if tok, err := L.Get(-2), L.Get(-1); tok != lua.LNil || err.String() != "jwt: claims: context canceled" {
		t.Fatalf("jwt_sign under a cancelled context: %v, %v", tok, err)
	}
}
