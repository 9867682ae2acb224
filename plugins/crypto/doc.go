// Package crypto is the `crypto` Lua module: hashing, HMAC, constant-time
// comparison, random tokens, base64 and JSON Web Tokens for route scripts,
// chiefly for authenticating connections in on_handshake, with HMAC secrets,
// PEM public keys or the key sets (JWKS) identity providers publish.
//
// Everything a script compares against a secret goes through constant-time
// code (equal, the HMAC check), and jwt_verify fails closed: the key decides
// the algorithm family, never the token (an HS256 token against a public key
// is refused, not checked as an HMAC keyed with the key's text), "none" is
// never accepted, and an empty secret is refused outright because it would
// make every forged token valid. Bad tokens and bad base64 are ordinary
// values (nil and a message) because they come from clients; wrong
// arguments raise because they are bugs in the script.
//
// The Go side is layered the same way: Verify and Sign (and VerifyHS256,
// SignHS256) work without Lua, with golang-jwt doing the parsing and the
// signatures; KeySet is a JWKS fetched and refreshed in the background by
// jwkset's HTTP storage, so that verification never waits on the network;
// the module is a thin binding over them with an injectable clock and HTTP
// client. Claims are converted with package luavalue so that they look
// exactly like the output of json.decode, and jwt_sign encodes exactly like
// json.encode.
//
// The module knows nothing of the engine, the router, connections or other
// modules; it is a self-describing value (Name, Open) that the engine holds
// in an explicit registry and preloads into each VM it builds. It owns the
// key sets scripts load (one per URL) and stops their refreshes on Close.
package crypto
