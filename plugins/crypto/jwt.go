package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// MaxTokenBytes bounds the token jwt_verify will look at. Real tokens are a
// few hundred bytes; the bound keeps a hostile header from making the server
// hash and parse megabytes.
const MaxTokenBytes = 16 << 10

// Verification failures. Their texts are what scripts see, so they are part
// of the Lua API; compare with errors.Is on the Go side.
var (
	ErrMalformed      = errors.New("jwt: malformed")
	ErrTokenTooLarge  = errors.New("jwt: token too large")
	ErrUnsupportedAlg = errors.New("jwt: unsupported alg") // wrapped with the alg: "jwt: unsupported alg RS256"
	ErrCrit           = errors.New("jwt: unsupported crit header")
	ErrBadSignature   = errors.New("jwt: bad signature")
	ErrExpired        = errors.New("jwt: expired")
	ErrNoExpiry       = errors.New("jwt: no exp claim")
	ErrNotYetValid    = errors.New("jwt: not yet valid")
	ErrIssuer         = errors.New("jwt: bad issuer")
	ErrAudience       = errors.New("jwt: bad audience")
	ErrEmptySecret    = errors.New("jwt: empty secret")
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
}

// hs256Header is the only header SignHS256 writes, pre-encoded.
var hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// b64 decodes segments strictly: unpadded URL alphabet and canonical trailing
// bits, so one token has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()

// VerifyHS256 checks a compact JWS with an HS256 signature and returns its
// claims as decoded by encoding/json with UseNumber.
//
// The order of checks is fixed and fails closed: size, shape, header (alg
// must be exactly HS256, so "none" and every asymmetric alg are refused
// before any key is used; crit is refused as RFC 7515 requires for unknown
// extensions), signature in constant time, then claims, then exp (now must
// be before exp+leeway), nbf (now must not be before nbf-leeway), iss and aud.
// Claims are not parsed until the signature holds, so unauthenticated input
// never reaches the JSON decoder beyond the small header.
func VerifyHS256(token string, secret []byte, now time.Time, opts VerifyOptions) (map[string]any, error) {
	if len(secret) == 0 {
		return nil, ErrEmptySecret
	}
	if len(token) > MaxTokenBytes {
		return nil, ErrTokenTooLarge
	}
	// encoding/base64 skips CR and LF even in strict mode; refusing every
	// byte outside the base64url alphabet keeps one spelling per token.
	if strings.IndexFunc(token, notTokenChar) >= 0 {
		return nil, ErrMalformed
	}
	h64, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, ErrMalformed
	}
	p64, s64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s64, ".") {
		return nil, ErrMalformed
	}
	var header map[string]any
	if err := decodeSegment(h64, &header); err != nil || header == nil {
		return nil, ErrMalformed
	}
	alg, ok := header["alg"].(string)
	if !ok {
		return nil, ErrMalformed
	}
	if alg != "HS256" {
		return nil, fmt.Errorf("%w %s", ErrUnsupportedAlg, printable(alg))
	}
	if _, ok := header["crit"]; ok {
		return nil, ErrCrit
	}
	sig, err := b64.DecodeString(s64)
	if err != nil {
		return nil, ErrMalformed
	}
	mac := hmac.New(sha256.New, secret)
	io.WriteString(mac, token[:len(h64)+1+len(p64)])
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, ErrBadSignature
	}
	var claims map[string]any
	if err := decodeSegment(p64, &claims); err != nil || claims == nil {
		return nil, ErrMalformed
	}
	if err := checkClaims(claims, now, opts); err != nil {
		return nil, err
	}
	return claims, nil
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

// decodeSegment decodes one base64url JSON object; a non-object leaves v nil.
func decodeSegment(seg string, v *map[string]any) error {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrMalformed
	}
	*v, _ = x.(map[string]any)
	return nil
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

// SignHS256 returns a compact JWS of payload, which must be a JSON object
// already encoded; SignHS256 does not check it, so that any encoder may be
// used (the Lua binding uses luavalue's, for output identical to json.encode).
func SignHS256(payload, secret []byte) (string, error) {
	if len(secret) == 0 {
		return "", ErrEmptySecret
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(hs256Header)+2+enc.EncodedLen(len(payload))+enc.EncodedLen(sha256.Size))
	buf = append(buf, hs256Header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write(buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, mac.Sum(nil))
	return string(buf), nil
}
