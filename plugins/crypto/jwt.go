package crypto

import (
	stdcrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds the token jwt_verify will look at. Real tokens are a
// few hundred bytes (an IdP's with many claims, a few KiB); the bound keeps a
// hostile token from making the server decode and hash megabytes.
const MaxTokenBytes = 16 << 10

// Verification failures. Their texts are what scripts see, so they are part
// of the Lua API; compare with errors.Is on the Go side.
var (
	ErrMalformed         = errors.New("jwt: malformed")
	ErrTokenTooLarge     = errors.New("jwt: token too large")
	ErrUnsupportedAlg    = errors.New("jwt: unsupported alg") // wrapped with the alg: "jwt: unsupported alg RS256"
	ErrCrit              = errors.New("jwt: unsupported crit header")
	ErrUnknownKeyID      = errors.New("jwt: unknown key id")
	ErrKeySetUnavailable = errors.New("jwt: key set unavailable")
	ErrBadSignature      = errors.New("jwt: bad signature")
	ErrExpired           = errors.New("jwt: expired")
	ErrNoExpiry          = errors.New("jwt: no exp claim")
	ErrNotYetValid       = errors.New("jwt: not yet valid")
	ErrIssuer            = errors.New("jwt: bad issuer")
	ErrAudience          = errors.New("jwt: bad audience")
	ErrEmptySecret       = errors.New("jwt: empty secret")
)

// VerifyOptions are the checks beyond signature and lifetime. The zero value
// checks only those.
type VerifyOptions struct {
	// Leeway tolerates clock skew between issuer and server on exp and nbf.
	Leeway time.Duration
	// Issuer, when set, must equal the iss claim.
	Issuer string
	// Audience, when set, must equal the aud claim or be one of its elements.
	Audience string
	// RequireExp refuses a token without an exp claim (ErrNoExpiry): one
	// that would otherwise be valid forever, however it leaked.
	RequireExp bool
	// Algs, when set, are the only algs accepted (each still only with a
	// key of its family). Empty: every alg the key's type allows, except
	// HS384 and HS512, which a secret accepts only when listed here (a
	// secret used to mean HS256 alone, and a script written then must not
	// start accepting more).
	Algs []string
}

// family is the kind of key an alg needs. A token names its alg, but the
// family of the key that verifies it is the caller's: the key decides, so
// that no token can pick how it is checked (an HS256 token "verified" with
// a public key used as an HMAC secret is the classic forgery).
type family uint8

const (
	famNone family = iota
	famHMAC
	famRSA
	famP256
	famP384
	famP521
	famEd25519
)

// algs are the supported algs and the key family each needs. "none" is not
// among them: an unsigned token is never valid.
var algs = map[string]family{
	"HS256": famHMAC, "HS384": famHMAC, "HS512": famHMAC,
	"RS256": famRSA, "RS384": famRSA, "RS512": famRSA,
	"PS256": famRSA, "PS384": famRSA, "PS512": famRSA,
	"ES256": famP256, "ES384": famP384, "ES512": famP521,
	"EdDSA": famEd25519,
}

// SupportedAlg reports whether alg is one Verify and Sign know.
func SupportedAlg(alg string) bool { return algs[alg] != famNone }

// keyFamily returns the family of a verification or signing key, famNone
// for a type no alg takes.
func keyFamily(key any) family {
	switch k := key.(type) {
	case []byte:
		return famHMAC
	case *rsa.PublicKey:
		return famRSA
	case *rsa.PrivateKey:
		return famRSA
	case *ecdsa.PublicKey:
		return curveFamily(k.Curve)
	case *ecdsa.PrivateKey:
		return curveFamily(k.Curve)
	case ed25519.PublicKey:
		return famEd25519
	case ed25519.PrivateKey:
		return famEd25519
	}
	return famNone
}

func curveFamily(c elliptic.Curve) family {
	switch c {
	case elliptic.P256():
		return famP256
	case elliptic.P384():
		return famP384
	case elliptic.P521():
		return famP521
	}
	return famNone
}

// defaultAlg is what Sign uses for a key when no alg is asked for.
var defaultAlg = map[family]string{
	famHMAC: "HS256", famRSA: "RS256", famP256: "ES256", famP384: "ES384", famP521: "ES512", famEd25519: "EdDSA",
}

func (o *VerifyOptions) allows(alg string) bool {
	if len(o.Algs) == 0 {
		return alg != "HS384" && alg != "HS512"
	}
	for _, a := range o.Algs {
		if a == alg {
			return true
		}
	}
	return false
}

// Keys is where Verify finds the key for a token: SingleKey, KeysByID or a
// *KeySet (a JWKS).
type Keys interface {
	// keysFor returns the keys that may have signed a token whose header
	// names kid (hasKID false: no kid). Only this package implements it.
	keysFor(kid string, hasKID bool) ([]verificationKey, error)
}

// verificationKey is one candidate key, with the only alg it may verify
// when its source says so (a JWK's "alg"); the empty alg: any of its family.
type verificationKey struct {
	key any
	alg string
}

// SingleKey is one key, used whatever kid a token names: a []byte HMAC
// secret, or an *rsa.PublicKey, *ecdsa.PublicKey (P-256, P-384, P-521) or
// ed25519.PublicKey.
type SingleKey struct{ Key any }

func (s SingleKey) keysFor(string, bool) ([]verificationKey, error) {
	if b, ok := s.Key.([]byte); ok && len(b) == 0 {
		return nil, ErrEmptySecret
	}
	return []verificationKey{{key: publicOf(s.Key)}}, nil
}

// KeysByID are keys by id: a token must name one in its kid header
// (otherwise ErrUnknownKeyID). Values are what SingleKey takes.
type KeysByID map[string]any

func (m KeysByID) keysFor(kid string, hasKID bool) ([]verificationKey, error) {
	k, ok := m[kid]
	if !hasKID || !ok {
		return nil, ErrUnknownKeyID
	}
	return SingleKey{k}.keysFor(kid, hasKID)
}

// parser decodes base64url strictly (canonical trailing bits) so that one
// token has one spelling; claims are decoded with UseNumber (the shape
// luavalue.ToLua gives scripts), and what is not an object is refused.
var parser = jwt.NewParser(jwt.WithStrictDecoding(), jwt.WithJSONNumber())

// Verify checks a compact JWS against keys and returns its claims as decoded
// by encoding/json with UseNumber. golang-jwt parses the token and checks
// the signature; the order of the checks and their errors are this
// package's, and documented for scripts:
//
// size; shape (three strict base64url segments, header and claims JSON
// objects, alg a string); alg (a supported one, allowed by opts.Algs; so
// "none" is refused before any key is looked at); crit (refused as RFC 7515
// requires for unknown extensions); the key (by kid, for KeysByID and
// KeySet); the alg against the key's family (an HS256 token and a public
// key: ErrUnsupportedAlg, never an HMAC with the key's bytes); the
// signature (HMAC compared in constant time); then exp (now must be before
// exp+leeway), nbf (now must not be before nbf-leeway), iss and aud.
//
// golang-jwt decodes the claims with the header, before any key is used:
// unauthenticated JSON, bounded by MaxTokenBytes, reaches encoding/json;
// only claims whose signature holds reach the caller.
//
// The registered claims are checked here rather than by golang-jwt's
// validator because the documented semantics differ from it: exp and nbf may
// be fractional (the library truncates them to seconds), and a non-numeric
// exp is ErrMalformed.
func Verify(token string, keys Keys, now time.Time, opts VerifyOptions) (map[string]any, error) {
	if len(token) > MaxTokenBytes {
		return nil, ErrTokenTooLarge
	}
	// encoding/base64 skips CR and LF even in strict mode; refusing every
	// byte outside the base64url alphabet keeps one spelling per token.
	if strings.IndexFunc(token, notTokenChar) >= 0 {
		return nil, ErrMalformed
	}
	var c jwt.MapClaims // a pointer to it: JSON null leaves it nil, which is refused
	t, parts, err := parser.ParseUnverified(token, &c)
	// ErrTokenUnverifiable: header and claims decoded, but the alg is
	// missing or one golang-jwt does not know; sorted out below.
	if err != nil && !errors.Is(err, jwt.ErrTokenUnverifiable) {
		return nil, ErrMalformed
	}
	alg, ok := t.Header["alg"].(string)
	if !ok || c == nil {
		return nil, ErrMalformed
	}
	fam := algs[alg]
	if fam == famNone || !opts.allows(alg) {
		return nil, fmt.Errorf("%w %s", ErrUnsupportedAlg, printable(alg))
	}
	if err != nil {
		return nil, ErrMalformed // not reached: every supported alg is registered
	}
	if _, ok := t.Header["crit"]; ok {
		return nil, ErrCrit
	}
	kid, hasKID := t.Header["kid"]
	kidStr, ok := kid.(string)
	if hasKID && !ok {
		return nil, ErrMalformed
	}
	if keys == nil {
		return nil, ErrUnknownKeyID
	}
	cands, err := keys.keysFor(kidStr, hasKID)
	if err != nil {
		return nil, err
	}
	signing := token[:len(parts[0])+1+len(parts[1])]
	matched := false
	for _, k := range cands {
		if keyFamily(k.key) != fam || (k.alg != "" && k.alg != alg) {
			continue
		}
		matched = true
		if t.Method.Verify(signing, t.Signature, k.key) == nil {
			if err := checkClaims(c, now, opts); err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	if !matched {
		return nil, fmt.Errorf("%w %s", ErrUnsupportedAlg, alg)
	}
	return nil, ErrBadSignature
}

// VerifyHS256 is Verify with one HMAC secret and the HS256 alg alone.
func VerifyHS256(token string, secret []byte, now time.Time, opts VerifyOptions) (map[string]any, error) {
	if len(secret) == 0 {
		return nil, ErrEmptySecret
	}
	opts.Algs = []string{"HS256"}
	return Verify(token, SingleKey{secret}, now, opts)
}

func checkClaims(claims map[string]any, now time.Time, opts VerifyOptions) error {
	t := float64(now.UnixNano()) / 1e9
	leeway := opts.Leeway.Seconds()
	if v, ok := claims["exp"]; ok {
		exp, ok := numericDate(v)
		if !ok {
			return ErrMalformed
		}
		if t >= exp+leeway {
			return ErrExpired
		}
	} else if opts.RequireExp {
		return ErrNoExpiry
	}
	if v, ok := claims["nbf"]; ok {
		nbf, ok := numericDate(v)
		if !ok {
			return ErrMalformed
		}
		if t < nbf-leeway {
			return ErrNotYetValid
		}
	}
	if opts.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != opts.Issuer {
			return ErrIssuer
		}
	}
	if opts.Audience != "" && !hasAudience(claims["aud"], opts.Audience) {
		return ErrAudience
	}
	return nil
}

func notTokenChar(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.')
}

// numericDate accepts what RFC 7519 calls a NumericDate: a JSON number of
// seconds, possibly fractional.
func numericDate(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil && !math.IsInf(f, 0)
}

// hasAudience follows RFC 7519 §4.1.3: aud is one string or an array of them.
func hasAudience(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, e := range a {
			if s, ok := e.(string); ok && s == want {
				return true
			}
		}
	}
	return false
}

// printable keeps attacker-chosen alg names from writing control bytes or
// kilobytes into logs.
func printable(s string) string {
	if s != "" && len(s) <= 32 && strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) < 0 {
		return s
	}
	if len(s) > 32 {
		s = s[:32]
	}
	return fmt.Sprintf("%+q", s)
}

// hs256Header is the header SignHS256 writes, pre-encoded.
var hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// SignHS256 returns a compact JWS of payload, which must be a JSON object
// already encoded; SignHS256 does not check it, so that any encoder may be
// used (the Lua binding uses luavalue's, for output identical to json.encode).
func SignHS256(payload, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", ErrEmptySecret
	}
	return Sign(payload, secret, "HS256", "")
}

// Sign returns a compact JWS of payload (a JSON object already encoded, as
// for SignHS256) signed with key: a []byte secret, or an *rsa.PrivateKey,
// *ecdsa.PrivateKey or ed25519.PrivateKey. alg "" is the key's default
// (HS256, RS256, ES256/ES384/ES512 by curve, EdDSA); another must be of the
// key's family. kid, when set, goes in the header. The header's keys are
// in sorted order (alg, kid, typ), so that HMAC and EdDSA tokens are the
// same for the same claims; ECDSA and PSS signatures are randomized.
func Sign(payload []byte, key any, alg, kid string) (string, error) {
	fam := keyFamily(key)
	switch k := key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		fam = famNone // a public key cannot sign
	case []byte:
		if len(k) == 0 {
			return "", ErrEmptySecret
		}
	}
	if fam == famNone {
		return "", fmt.Errorf("jwt: cannot sign with a %T", key)
	}
	if alg == "" {
		alg = defaultAlg[fam]
	}
	if algs[alg] != fam {
		return "", fmt.Errorf("%w %s for this key", ErrUnsupportedAlg, printable(alg))
	}
	enc := base64.RawURLEncoding
	var head string
	if alg == "HS256" && kid == "" {
		head = hs256Header
	} else {
		h, err := json.Marshal(struct {
			Alg string `json:"alg"`
			Kid string `json:"kid,omitempty"`
			Typ string `json:"typ"`
		}{alg, kid, "JWT"})
		if err != nil {
			return "", fmt.Errorf("jwt: header: %w", err)
		}
		head = enc.EncodeToString(h)
	}
	buf := make([]byte, 0, len(head)+2+enc.EncodedLen(len(payload))+enc.EncodedLen(512))
	buf = append(buf, head...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := jwt.GetSigningMethod(alg).Sign(string(buf), key)
	if err != nil {
		return "", fmt.Errorf("jwt: sign %s: %w", alg, err)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// IsPEM reports whether s looks like PEM text (a "-----BEGIN " line),
// which the Lua binding takes for a key rather than an HMAC secret.
func IsPEM(s string) bool {
	return strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "-----BEGIN ")
}

// firstPEMBlock decodes the first PEM block of s (leading blank space
// allowed).
func firstPEMBlock(s string) (*pem.Block, error) {
	block, _ := pem.Decode([]byte(strings.TrimLeft(s, " \t\r\n")))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return block, nil
}

// ParsePublicKeyPEM parses the first PEM block of s: a PUBLIC KEY (PKIX:
// RSA, ECDSA on P-256/P-384/P-521, Ed25519), an RSA PUBLIC KEY (PKCS #1),
// or a CERTIFICATE, whose key is taken (the certificate itself is not
// checked: it is only a container here).
func ParsePublicKeyPEM(s string) (any, error) {
	block, err := firstPEMBlock(s)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, fmt.Errorf("a %s: verifying needs the public key", block.Type)
		}
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", block.Type, err)
	}
	if keyFamily(key) == famNone {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return key, nil
}

// ParsePrivateKeyPEM parses the first PEM block of s: a PRIVATE KEY (PKCS
// #8: RSA, ECDSA, Ed25519), an RSA PRIVATE KEY (PKCS #1) or an EC PRIVATE
// KEY (SEC 1).
func ParsePrivateKeyPEM(s string) (any, error) {
	block, err := firstPEMBlock(s)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want a private key)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", block.Type, err)
	}
	if keyFamily(key) == famNone {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return key, nil
}

// publicOf returns the public half of a key a JWKS carried with its
// private parts (a misconfigured IdP); a public key is returned as is.
func publicOf(key any) any {
	if s, ok := key.(interface{ Public() stdcrypto.PublicKey }); ok {
		return s.Public()
	}
	return key
}
