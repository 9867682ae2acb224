package crypto_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestJWKSOnARealServer: a route verifies identity-provider tokens in
// on_handshake against a JWKS loaded at the script's top level, through a
// real node and a real WebSocket client; the provider rotates its key and
// the route follows.
func TestJWKSOnARealServer(t *testing.T) {
	t.Parallel()
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	var mu sync.Mutex
	published := []struct {
		kid string
		key *ecdsa.PrivateKey
	}{{"k1", k1}}
	var hits atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		defer mu.Unlock()
		var doc jwkset.JWKSMarshal
		for _, p := range published {
			j, err := jwkset.NewJWKFromKey(&p.key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: p.kid, USE: jwkset.UseSig}})
			if err != nil {
				t.Error(err)
				return
			}
			doc.Keys = append(doc.Keys, j.Marshal())
		}
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(idp.Close)
	sign := func(kid string, alg jwt.SigningMethod, key *ecdsa.PrivateKey, aud string) string {
		tok := jwt.NewWithClaims(alg, jwt.MapClaims{"sub": "ann", "iss": "https://idp.test/", "aud": aud, "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// [http] allow lists the provider, for when the server hands the
	// module its allow-listed client.
	s := moontest.Start(t, moontest.Files(`
[http]
allow = ["127.0.0.1:*"]

[[routes]]
path = "/idp"
script = "idp.lua"
settings = { jwks = "`+idp.URL+`/.well-known/jwks.json" }
`, "scripts/idp.lua", `
local idp = crypto.jwks(ws.settings.jwks, { refresh = 1 })
return {
  on_handshake = function(req)
    local token = (req.headers["authorization"] or ""):match("^Bearer (.+)$")
    if not token then return false, 401, "no token" end
    local claims, err = crypto.jwt_verify(token, idp, { iss = "https://idp.test/", aud = "moonwire" })
    if not claims then return false, 401, err end
    return { user = claims.sub }
  end,
  on_open = function(conn) conn:send("hello " .. conn:get("user")) end,
}`))
	dial := func(tok string) (*moontest.Client, error) {
		return moontest.TryDial(t, s.URL("/idp"), moontest.DialOptions{Header: http.Header{"Authorization": {"Bearer " + tok}}})
	}
	refused := func(tok, why string) {
		t.Helper()
		_, err := dial(tok)
		if r, ok := err.(*moontest.Refusal); !ok || r.Status != 401 || r.Body != why {
			t.Fatalf("want a 401 %q, got %v", why, err)
		}
	}
	// The first fetch may still run when the first client comes (the
	// script waits for it half a second at most): retry until it is in.
	good := sign("k1", jwt.SigningMethodES256, k1, "moonwire")
	var c *moontest.Client
	moontest.WaitFor(t, "the key set", func() bool {
		var err error
		c, err = dial(good)
		return err == nil
	})
	c.Expect("hello ann")
	refused(sign("k1", jwt.SigningMethodES256, k1, "another-app"), "jwt: bad audience")
	refused(sign("k2", jwt.SigningMethodES384, k2, "moonwire"), "jwt: unknown key id")

	// Rotation: k2 replaces k1. The refused k2 token above started a fetch,
	// which may have run before the rotation, and the rate limit (one per
	// 10s) allows no other yet; the script's refresh of 1s picks it up.
	mu.Lock()
	published[0].kid, published[0].key = "k2", k2
	mu.Unlock()
	newer := sign("k2", jwt.SigningMethodES384, k2, "moonwire")
	moontest.WaitFor(t, "k2 to be accepted", func() bool {
		c, err := dial(newer)
		if err == nil {
			c.Expect("hello ann")
		}
		return err == nil
	})
	refused(good, "jwt: unknown key id")
	if n := hits.Load(); n < 2 {
		t.Fatalf("%d fetches", n)
	}
}
