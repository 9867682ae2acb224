package crypto

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

// testKey is a key pair the tests sign with in Go and verify with in Lua.
type testKey struct {
	kid, alg string // alg: the one the tests sign with
	priv     any
	pub      any
}

// pubPEM is the public key as PKIX PEM ("PUBLIC KEY").
func (k testKey) pubPEM(t testing.TB) string {
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// privPEM is the private key as PKCS #8 PEM ("PRIVATE KEY").
func (k testKey) privPEM(t testing.TB) string {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// sign makes a token with golang-jwt, with alg (k.alg when "") and k.kid.
func (k testKey) sign(t testing.TB, alg string, claims jwt.MapClaims) string {
	if alg == "" {
		alg = k.alg
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	if k.kid != "" {
		tok.Header["kid"] = k.kid
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Keys are made once per test binary: RSA generation is slow under -race.
var (
	rsaKeys = sync.OnceValues(func() (*rsa.PrivateKey, *rsa.PrivateKey) {
		a, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		b, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return a, b
	})
	ecKeys = sync.OnceValue(func() map[elliptic.Curve]*ecdsa.PrivateKey {
		m := map[elliptic.Curve]*ecdsa.PrivateKey{}
		for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			m[c] = k
		}
		return m
	})
	edKey = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func rsaKey(kid, alg string) testKey {
	a, _ := rsaKeys()
	return testKey{kid: kid, alg: alg, priv: a, pub: &a.PublicKey}
}

func rsaKey2(kid, alg string) testKey {
	_, b := rsaKeys()
	return testKey{kid: kid, alg: alg, priv: b, pub: &b.PublicKey}
}

func ecKey(kid string, c elliptic.Curve) testKey {
	k := ecKeys()[c]
	alg := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[c]
	return testKey{kid: kid, alg: alg, priv: k, pub: &k.PublicKey}
}

func ed25519Key(kid string) testKey {
	k := edKey()
	return testKey{kid: kid, alg: "EdDSA", priv: k, pub: k.Public()}
}

// allAlgKeys is one key per supported asymmetric alg.
func allAlgKeys() []testKey {
	return []testKey{
		rsaKey("rs256", "RS256"), rsaKey("rs384", "RS384"), rsaKey("rs512", "RS512"),
		rsaKey("ps256", "PS256"), rsaKey("ps384", "PS384"), rsaKey("ps512", "PS512"),
		ecKey("es256", elliptic.P256()), ecKey("es384", elliptic.P384()), ecKey("es512", elliptic.P521()),
		ed25519Key("eddsa"),
	}
}

// runLua runs code after prelude in a fresh state with m, globals set
// first (strings).
func runLua(t *testing.T, m *Module, globals map[string]string, code string) {
	t.Helper()
	L := luatest.NewState(t, m)
	for k, v := range globals {
		L.SetGlobal(k, lua.LString(v))
	}
	luatest.Run(t, L, prelude, code)
}

var claimsOK = jwt.MapClaims{"sub": "ann", "iss": "https://idp.test/", "aud": "moonwire", "exp": 1704067260}

// TestEveryAlgorithm: each alg, signed by golang-jwt with Go's keys,
// verifies in Lua with the PEM public key, with iss and aud checked; and
// Lua's jwt_sign with the PEM private key makes tokens golang-jwt accepts.
func TestEveryAlgorithm(t *testing.T) {
	t.Parallel()
	m := New(Options{Now: func() time.Time { return fixedNow }})
	for _, k := range allAlgKeys() {
		t.Run(k.alg, func(t *testing.T) {
			t.Parallel()
			runLua(t, m, map[string]string{
				"TOKEN": k.sign(t, "", claimsOK), "PUB": k.pubPEM(t), "PRIV": k.privPEM(t), "ALG": k.alg,
			}, `
				local c = assert(crypto.jwt_verify(TOKEN, PUB, {iss = "https://idp.test/", aud = "moonwire"}))
				eq(c.sub, "ann")
				assert(crypto.jwt_verify(TOKEN, PUB, {algs = {ALG}}))
				fails("jwt: bad issuer", crypto.jwt_verify(TOKEN, PUB, {iss = "https://other.test/"}))
				fails("jwt: bad audience", crypto.jwt_verify(TOKEN, PUB, {aud = "other"}))
				fails("jwt: expired", crypto.jwt_verify(crypto.jwt_sign({exp = NOW}, PRIV, {alg = ALG}), PUB))
				local h, p, s = TOKEN:match("^([^.]+)%.([^.]+)%.([^.]+)$")
				fails("jwt: bad signature", crypto.jwt_verify(h .. "." .. b64url('{"sub":"admin"}') .. "." .. s, PUB))
				fails("jwt: bad signature", crypto.jwt_verify(h .. "." .. p .. ".", PUB))
				SIGNED = assert(crypto.jwt_sign({sub = "bob", exp = NOW + 60}, PRIV, {alg = ALG, kid = "k1"}))
				eq(assert(crypto.jwt_verify(SIGNED, PUB)).sub, "bob")
			`)
		})
	}
	// Lua's tokens, checked by golang-jwt.
	for _, k := range allAlgKeys() {
		L := luatest.NewState(t, m)
		L.SetGlobal("PRIV", lua.LString(k.privPEM(t)))
		L.SetGlobal("ALG", lua.LString(k.alg))
		luatest.Run(t, L, prelude, `TOK = assert(crypto.jwt_sign({sub = "bob", exp = 4102444800}, PRIV, {alg = ALG, kid = "k1"}))`)
		tok, err := jwt.Parse(L.GetGlobal("TOK").String(), func(*jwt.Token) (any, error) { return k.pub, nil },
			jwt.WithValidMethods([]string{k.alg}))
		if err != nil || tok.Header["kid"] != "k1" {
			t.Errorf("%s: golang-jwt refuses jwt_sign's token: %v", k.alg, err)
		}
	}
}

// TestHMACAlgs: a secret accepts HS256 by default, HS384 and HS512 only
// when listed; Lua signs all three.
func TestHMACAlgs(t *testing.T) {
	t.Parallel()
	m := New(Options{Now: func() time.Time { return fixedNow }})
	k := testKey{priv: []byte("s3cret")}
	runLua(t, m, map[string]string{
		"HS256": k.sign(t, "HS256", claimsOK), "HS384": k.sign(t, "HS384", claimsOK), "HS512": k.sign(t, "HS512", claimsOK),
	}, `
		assert(crypto.jwt_verify(HS256, "s3cret"))
		fails("jwt: unsupported alg HS384", crypto.jwt_verify(HS384, "s3cret"))
		fails("jwt: unsupported alg HS512", crypto.jwt_verify(HS512, "s3cret"))
		assert(crypto.jwt_verify(HS384, "s3cret", {algs = {"HS384"}}))
		assert(crypto.jwt_verify(HS512, "s3cret", {algs = {"HS256", "HS512"}}))
		fails("jwt: unsupported alg HS256", crypto.jwt_verify(HS256, "s3cret", {algs = {"HS512"}}))
		fails("jwt: bad signature", crypto.jwt_verify(HS512, "other", {algs = {"HS512"}}))
		local t = crypto.jwt_sign({sub = "x"}, "s3cret", {alg = "HS512"})
		assert(crypto.jwt_verify(t, "s3cret", {algs = {"HS512"}}))
		eq(crypto.jwt_sign({}, "k", {alg = "HS256"}), crypto.jwt_sign({}, "k"), "HS256 is the default")
		raises("alg: not one this key signs with", crypto.jwt_sign, {}, "k", {alg = "RS256"})
	`)
}

// TestPEMForms: a public key may come as PKIX, PKCS #1 or inside a
// certificate.
func TestPEMForms(t *testing.T) {
	t.Parallel()
	k := rsaKey("", "RS256")
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k.pub.(*rsa.PublicKey))}))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1, 0)} // long expired: it is only a container
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.pub, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	runLua(t, New(Options{Now: func() time.Time { return fixedNow }}), map[string]string{
		"TOKEN": k.sign(t, "", claimsOK), "PKIX": "\n  " + k.pubPEM(t), "PKCS1": pkcs1, "CERT": cert,
	}, `
		assert(crypto.jwt_verify(TOKEN, PKIX), "PKIX, after blank lines")
		assert(crypto.jwt_verify(TOKEN, PKCS1), "PKCS #1")
		assert(crypto.jwt_verify(TOKEN, CERT), "certificate")
	`)
}

// TestAlgConfusion: the key decides the family; a token cannot choose it.
func TestAlgConfusion(t *testing.T) {
	t.Parallel()
	rs := rsaKey("", "RS256")
	es := ecKey("", elliptic.P256())
	ed := ed25519Key("")
	pub := rs.pubPEM(t)
	der, _ := x509.MarshalPKIXPublicKey(rs.pub)
	// The classic forgery: HS256 keyed with the public key's text or bytes.
	withText := testKey{priv: []byte(pub)}.sign(t, "HS256", claimsOK)
	withDER := testKey{priv: der}.sign(t, "HS256", claimsOK)
	runLua(t, New(Options{Now: func() time.Time { return fixedNow }}), map[string]string{
		"PUB": pub, "ESPUB": es.pubPEM(t), "EDPUB": ed.pubPEM(t), "P384PUB": ecKey("", elliptic.P384()).pubPEM(t),
		"HS_TEXT": withText, "HS_DER": withDER,
		"RS": rs.sign(t, "RS256", claimsOK), "PS": rs.sign(t, "PS256", claimsOK),
		"ES": es.sign(t, "", claimsOK), "ED": ed.sign(t, "", claimsOK),
	}, `
		fails("jwt: unsupported alg HS256", crypto.jwt_verify(HS_TEXT, PUB))
		fails("jwt: unsupported alg HS256", crypto.jwt_verify(HS_DER, PUB))
		fails("jwt: unsupported alg RS256", crypto.jwt_verify(RS, "secret"))
		fails("jwt: unsupported alg ES256", crypto.jwt_verify(ES, PUB)) -- with an RSA key
		fails("jwt: unsupported alg RS256", crypto.jwt_verify(RS, ESPUB)) -- with an EC key
		fails("jwt: unsupported alg ES256", crypto.jwt_verify(ES, P384PUB)) -- with a P-384 key
		fails("jwt: unsupported alg EdDSA", crypto.jwt_verify(ED, ESPUB))
		fails("jwt: unsupported alg RS256", crypto.jwt_verify(RS, EDPUB))
		fails("jwt: unsupported alg RS256", crypto.jwt_verify(RS, PUB, {algs = {"PS256"}}))
		assert(crypto.jwt_verify(PS, PUB, {algs = {"PS256"}}))
		fails("jwt: unsupported alg none", crypto.jwt_verify(token('{"alg":"none"}', '{"sub":"admin"}'), PUB))
		fails("jwt: unsupported alg none", crypto.jwt_verify(token('{"alg":"none","kid":"a"}', '{"sub":"admin"}'), {a = PUB}))
		fails("jwt: unsupported alg HS256", crypto.jwt_verify(token('{"alg":"HS256"}', '{}', "x"), EDPUB))
	`)
}

// TestKeysByID: a table of keys picks by the token's kid.
func TestKeysByID(t *testing.T) {
	t.Parallel()
	a, b := rsaKey("a", "RS256"), ecKey("b", elliptic.P256())
	runLua(t, New(Options{Now: func() time.Time { return fixedNow }}), map[string]string{
		"A": a.pubPEM(t), "B": b.pubPEM(t),
		"TA": a.sign(t, "", claimsOK), "TB": b.sign(t, "", claimsOK),
		"NOKID":   rsaKey("", "RS256").sign(t, "", claimsOK),
		"OTHER":   rsaKey("c", "RS256").sign(t, "", claimsOK),
		"SWAPPED": testKey{kid: "b", priv: a.priv}.sign(t, "RS256", claimsOK),
		"HS":      testKey{kid: "h", priv: []byte("hmac-secret")}.sign(t, "HS256", claimsOK),
	}, `
		local keys = {a = A, b = B, h = "hmac-secret"}
		eq(assert(crypto.jwt_verify(TA, keys)).sub, "ann")
		eq(assert(crypto.jwt_verify(TB, keys)).sub, "ann")
		eq(assert(crypto.jwt_verify(HS, keys)).sub, "ann", "a secret among the keys")
		fails("jwt: unknown key id", crypto.jwt_verify(NOKID, keys))
		fails("jwt: unknown key id", crypto.jwt_verify(OTHER, keys))
		fails("jwt: unsupported alg RS256", crypto.jwt_verify(SWAPPED, keys)) -- kid b is an EC key
		fails("jwt: malformed", crypto.jwt_verify(token('{"alg":"HS256","kid":5}', '{}', "hmac-secret"), keys))
		assert(crypto.jwt_verify(TA, A), "one key ignores kid")
	`)
}

// TestKeyArgumentErrors: mistakes in the key are the script's: they raise.
func TestKeyArgumentErrors(t *testing.T) {
	t.Parallel()
	k := rsaKey("", "RS256")
	runLua(t, New(Options{}), map[string]string{
		"PUB": k.pubPEM(t), "PRIV": k.privPEM(t),
		"TOK": k.sign(t, "", claimsOK),
	}, `
		raises("PEM public key: no PEM block", crypto.jwt_verify, TOK, "-----BEGIN PUBLIC KEY-----\ngarbage")
		raises("PEM public key: a PRIVATE KEY: verifying needs the public key", crypto.jwt_verify, TOK, PRIV)
		raises("PEM public key: PUBLIC KEY:", crypto.jwt_verify, TOK, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
		raises('unsupported PEM block "FOO"', crypto.jwt_verify, TOK, "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n")
		raises('PEM public key (key id "a")', crypto.jwt_verify, TOK, {a = "-----BEGIN PUBLIC KEY-----\n"})
		raises('secret must not be empty (key id "a")', crypto.jwt_verify, TOK, {a = ""})
		raises("the key table is empty", crypto.jwt_verify, TOK, {})
		raises("maps key ids (strings) to keys (strings)", crypto.jwt_verify, TOK, {PUB})
		raises("maps key ids (strings) to keys (strings)", crypto.jwt_verify, TOK, {a = 5})
		raises("key set expected, got number", crypto.jwt_verify, TOK, 5)
		raises("key set expected, got userdata", crypto.jwt_verify, TOK, newproxy())
		raises("algs must be a non-empty array", crypto.jwt_verify, TOK, PUB, {algs = {}})
		raises("algs must be a non-empty array", crypto.jwt_verify, TOK, PUB, {algs = "RS256"})
		raises("algs[1]: want one of", crypto.jwt_verify, TOK, PUB, {algs = {"none"}})
		raises("algs[2]: want one of", crypto.jwt_verify, TOK, PUB, {algs = {"RS256", "rs256"}})
		raises("PEM private key: unsupported PEM block", crypto.jwt_sign, {}, PUB)
		raises("PEM private key: no PEM block", crypto.jwt_sign, {}, "-----BEGIN nothing")
		raises("alg: not one this key signs with", crypto.jwt_sign, {}, PRIV, {alg = "ES256"})
		raises("alg: not one this key signs with", crypto.jwt_sign, {}, PRIV, {alg = "none"})
		raises("kid must be a non-empty string", crypto.jwt_sign, {}, PRIV, {kid = ""})
		raises('unknown option "kdi"', crypto.jwt_sign, {}, PRIV, {kdi = "a"})
		local tok = assert(crypto.jwt_sign({}, PRIV))
		eq(tok:sub(1, 20), b64url('{"alg":"RS256","typ":"JWT"}'):sub(1, 20), "RS256 is the RSA default")
	`)
}

// FuzzJWTVerifyPublicKeys feeds arbitrary tokens to Verify with keys of
// every family by kid: it must never panic, every failure must be a
// documented error, and a success must be a token whose alg is of the
// family of the key its kid names and that golang-jwt accepts with that key
// and alg alone.
func FuzzJWTVerifyPublicKeys(f *testing.F) {
	keys := KeysByID{"hs": []byte("fuzz-secret")}
	byKID := map[string]testKey{"hs": {kid: "hs", alg: "HS256", priv: []byte("fuzz-secret"), pub: []byte("fuzz-secret")}}
	for _, k := range allAlgKeys() {
		keys[k.kid] = k.pub
		byKID[k.kid] = k
		f.Add(k.sign(f, "", jwt.MapClaims{"sub": "u1", "exp": 1704067260}))
	}
	f.Add(byKID["hs"].sign(f, "", jwt.MapClaims{}))
	f.Add(testKey{kid: "rs256", priv: []byte("guess")}.sign(f, "HS256", jwt.MapClaims{}))
	f.Add("eyJhbGciOiJub25lIiwia2lkIjoiaHMifQ.e30.")
	known := []error{ErrMalformed, ErrTokenTooLarge, ErrUnsupportedAlg, ErrCrit, ErrUnknownKeyID, ErrBadSignature, ErrExpired, ErrNotYetValid}
	f.Fuzz(func(t *testing.T, token string) {
		_, err := Verify(token, keys, fixedNow, VerifyOptions{Algs: []string{"HS256", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}})
		if err != nil {
			for _, e := range known {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("undocumented error %v", err)
		}
		tok, _, perr := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
		if perr != nil {
			t.Fatalf("accepted %q, which golang-jwt cannot parse: %v", token, perr)
		}
		kid, _ := tok.Header["kid"].(string)
		k := byKID[kid]
		alg := tok.Method.Alg()
		if algs[alg] != keyFamily(k.pub) {
			t.Fatalf("accepted alg %s with key %s", alg, kid)
		}
		if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return k.pub, nil },
			jwt.WithValidMethods([]string{alg}), jwt.WithoutClaimsValidation()); err != nil {
			t.Fatalf("accepted %q, which golang-jwt refuses with key %s: %v", token, kid, err)
		}
	})
}

// BenchmarkVerify is one verification per alg family, with a key given
// directly and through a loaded key set (what on_handshake pays).
func BenchmarkVerify(b *testing.B) {
	claims := jwt.MapClaims{"sub": "u1", "exp": 1704067260, "iss": "https://idp.test/", "aud": "moonwire"}
	hs := testKey{alg: "HS256", priv: []byte("k")}
	cases := []struct {
		name string
		key  testKey
		pub  any
	}{
		{"HS256", hs, []byte("k")},
		{"RS256", rsaKey("rs", "RS256"), nil},
		{"ES256", ecKey("es", elliptic.P256()), nil},
		{"EdDSA", ed25519Key("ed"), nil},
	}
	for _, c := range cases {
		pub := c.pub
		if pub == nil {
			pub = c.key.pub
		}
		tok := c.key.sign(b, "", claims)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Verify(tok, SingleKey{pub}, fixedNow, VerifyOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("JWKS-ES256", func(b *testing.B) {
		k := ecKey("es", elliptic.P256())
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwksDoc(b, k)) }))
		defer srv.Close()
		ks, err := NewKeySet(srv.URL, KeySetOptions{Logger: quietLog()})
		if err != nil {
			b.Fatal(err)
		}
		defer ks.Close()
		if err := ks.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
		tok := k.sign(b, "", claims)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Verify(tok, ks, fixedNow, VerifyOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
