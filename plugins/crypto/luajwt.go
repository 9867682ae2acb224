package crypto

import (
	"fmt"
	"math"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// keySetType names the key set userdata in messages and tostring.
const keySetType = "crypto.jwks"

// maxWait bounds crypto.jwks's wait option: it holds the VM that calls it.
const maxWait = 60

// jwt_verify(token, key [, {leeway=, iss=, aud=, require_exp=, algs=}]) -> claims | nil, err
//
// key is a secret, a PEM public key, a table of those by kid, or a key set
// from crypto.jwks.
func (m *Module) jwtVerify(L *lua.LState) int {
	token := L.CheckString(1)
	keys := m.verifyKeys(L, 2)
	opts := verifyOptions(L, 3)
	claims, err := Verify(token, keys, m.now(), opts)
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(luavalue.ToLua(L, claims))
	return 1
}

// verifyKeys reads jwt_verify's key argument. Mistakes in it raise: they
// are the script's (or its settings'), not the client's.
func (m *Module) verifyKeys(L *lua.LState, n int) Keys {
	switch v := L.Get(n).(type) {
	case lua.LString:
		return SingleKey{m.verifyKey(L, n, "", string(v))}
	case *lua.LTable:
		byID := KeysByID{}
		for k, e := v.Next(lua.LNil); k != lua.LNil; k, e = v.Next(k) {
			kid, ok1 := k.(lua.LString)
			s, ok2 := e.(lua.LString)
			if !ok1 || !ok2 {
				L.ArgError(n, "a key table maps key ids (strings) to keys (strings)")
			}
			byID[string(kid)] = m.verifyKey(L, n, string(kid), string(s))
		}
		if len(byID) == 0 {
			L.ArgError(n, "the key table is empty")
		}
		return byID
	case *lua.LUserData:
		if ks, ok := v.Value.(*KeySet); ok {
			return ks
		}
	}
	L.ArgError(n, "secret, PEM public key, table of keys or key set expected, got "+L.Get(n).Type().String())
	return nil
}

// verifyKey turns one key string into a key: PEM text is a public key (or
// raises), anything else an HMAC secret, which must not be empty: a missing
// setting must not turn into "accept every token signed with the empty
// key".
func (m *Module) verifyKey(L *lua.LState, n int, kid, s string) any {
	where := ""
	if kid != "" {
		where = fmt.Sprintf(" (key id %q)", kid)
	}
	if s == "" {
		L.ArgError(n, "secret must not be empty"+where)
	}
	if !IsPEM(s) {
		return []byte(s)
	}
	key, err := m.pubKeys.get(s, ParsePublicKeyPEM)
	if err != nil {
		L.ArgError(n, "PEM public key"+where+": "+err.Error())
	}
	return key
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
		case "algs":
			opts.Algs = algList(L, n, v)
		default:
			L.ArgError(n, fmt.Sprintf("unknown option %q (want leeway, iss, aud, require_exp or algs)", k.String()))
		}
	}
	return opts
}

// algList reads opts.algs: a non-empty array of supported alg names.
func algList(L *lua.LState, n int, v lua.LValue) []string {
	t, ok := v.(*lua.LTable)
	if !ok || t.Len() == 0 {
		L.ArgError(n, "algs must be a non-empty array of alg names")
	}
	out := make([]string, 0, t.Len())
	for i := 1; i <= t.Len(); i++ {
		s, ok := t.RawGetInt(i).(lua.LString)
		if !ok || !SupportedAlg(string(s)) {
			L.ArgError(n, fmt.Sprintf("algs[%d]: want one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA", i))
		}
		out = append(out, string(s))
	}
	return out
}

// jwt_sign(claims, key [, {alg=, kid=}]) -> token | nil, err
//
// key is a secret or a PEM private key.
func (m *Module) jwtSign(L *lua.LState) int {
	claims := L.CheckTable(1)
	s := L.CheckString(2)
	if s == "" {
		L.ArgError(2, "secret must not be empty")
	}
	var key any = []byte(s)
	if IsPEM(s) {
		k, err := m.privKeys.get(s, ParsePrivateKeyPEM)
		if err != nil {
			L.ArgError(2, "PEM private key: "+err.Error())
		}
		key = k
	}
	var alg, kid string
	if t := L.OptTable(3, nil); t != nil {
		for k, v := t.Next(lua.LNil); k != lua.LNil; k, v = t.Next(k) {
			s, ok := v.(lua.LString)
			switch k.String() {
			case "alg":
				if !ok || algs[string(s)] == famNone || algs[string(s)] != keyFamily(key) {
					L.ArgError(3, "alg: not one this key signs with")
				}
				alg = string(s)
			case "kid":
				if !ok || s == "" {
					L.ArgError(3, "kid must be a non-empty string")
				}
				kid = string(s)
			default:
				L.ArgError(3, fmt.Sprintf("unknown option %q (want alg or kid)", k.String()))
			}
		}
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
	token, err := Sign(payload, key, alg, kid)
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(lua.LString(token))
	return 1
}

// crypto.jwks(url [, {refresh=, wait=}]) -> keyset [, err]
//
// The key set for url, made on the first call (in any VM of any route) and
// shared after; the first call's options apply. Calls wait for the first
// fetch at most until wait seconds (of the first call; default 0.5, less
// than the default handler timeout) after the set was made, and never past
// the VM's deadline; once the fetch has ended they return at once. A call
// from a callback rather than the top level would hold the lane that long
// for a new URL: the reference says to call it at the top level. The
// second result, when present, says why the set has no keys yet; it keeps
// trying in the background either way.
func (m *Module) jwks(L *lua.LState, mt *lua.LTable) int {
	raw := L.CheckString(1)
	refresh := m.opts.JWKSRefresh
	wait := 500 * time.Millisecond
	if t := L.OptTable(2, nil); t != nil {
		for k, v := t.Next(lua.LNil); k != lua.LNil; k, v = t.Next(k) {
			f, ok := v.(lua.LNumber)
			switch k.String() {
			case "refresh":
				if !ok || !(f >= 1 && f <= 86400) {
					L.ArgError(2, "refresh must be a number of seconds from 1 to 86400")
				}
				refresh = time.Duration(float64(f) * float64(time.Second))
			case "wait":
				if !ok || !(f >= 0 && f <= maxWait) {
					L.ArgError(2, fmt.Sprintf("wait must be a number of seconds from 0 to %d", maxWait))
				}
				wait = time.Duration(float64(f) * float64(time.Second))
			default:
				L.ArgError(2, fmt.Sprintf("unknown option %q (want refresh or wait)", k.String()))
			}
		}
	}
	ks, deadline, err := m.keySet(raw, refresh, wait)
	if err != nil {
		L.ArgError(1, err.Error())
	}
	if !deadline.IsZero() {
		if d := time.Until(deadline); d > 0 {
			t := time.NewTimer(d)
			var done <-chan struct{}
			if ctx := L.Context(); ctx != nil {
				done = ctx.Done()
			}
			select {
			case <-ks.ready:
			case <-t.C:
			case <-done:
			}
			t.Stop()
		}
	}
	ud := L.NewUserData()
	ud.Value = ks
	ud.Metatable = mt
	L.Push(ud)
	if err := ks.Err(); err != nil {
		L.Push(lua.LString(err.Error() + " (retrying in the background)"))
		return 2
	}
	return 1
}

// keySet returns the set for rawURL, making it if need be with refresh,
// and how long a caller may wait for its first fetch: until the deadline
// the call that made it set (wait after), the zero time once the fetch has
// ended. One deadline per set bounds the whole load: VMs made after it do
// not wait again.
func (m *Module) keySet(rawURL string, refresh, wait time.Duration) (ks *KeySet, deadline time.Time, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, time.Time{}, fmt.Errorf("%s: the module is closed", keySetType)
	}
	ms, ok := m.sets[rawURL]
	if !ok {
		if len(m.sets) >= MaxKeySets {
			return nil, time.Time{}, fmt.Errorf("more than %d key set URLs", MaxKeySets)
		}
		ks, err := NewKeySet(rawURL, KeySetOptions{
			Client:     m.opts.HTTPClient,
			Refresh:    refresh,
			MinRefresh: m.opts.JWKSMinRefresh,
			Timeout:    m.opts.JWKSTimeout,
			Logger:     m.opts.Logger,
		})
		if err != nil {
			return nil, time.Time{}, err
		}
		ms = &moduleSet{ks: ks, deadline: time.Now().Add(wait)}
		m.sets[rawURL] = ms
	}
	select {
	case <-ms.ks.ready:
		return ms.ks, time.Time{}, nil
	default:
		return ms.ks, ms.deadline, nil
	}
}

// moduleSet is a key set and the deadline of the wait for its first fetch.
type moduleSet struct {
	ks       *KeySet
	deadline time.Time
}

// keyCache keeps parsed PEM keys by their text, so that a script passing
// its settings' key on every handshake parses it once. Keys come from
// scripts and their settings, not from clients, so a small bound that
// starts over when full is enough.
type keyCache struct {
	mu sync.Mutex
	m  map[string]any
}

const keyCacheSize = 64

func (c *keyCache) get(pem string, parse func(string) (any, error)) (any, error) {
	c.mu.Lock()
	k, ok := c.m[pem]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := parse(pem)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= keyCacheSize {
		c.m = make(map[string]any)
	}
	c.m[pem] = k
	c.mu.Unlock()
	return k, nil
}
