// Package crypto is the `crypto` Lua module: hashing, HMAC, constant-time
// comparison, random tokens, base64 and HS256 JSON Web Tokens for route
// scripts, chiefly for authenticating connections in on_handshake.
//
// Everything a script compares against a secret goes through constant-time
// code (equal, jwt_verify's signature check), and jwt_verify fails closed:
// only HS256 is accepted, whatever the token's header asks for, and an empty
// secret is refused outright because it would make every forged token valid.
// Bad tokens and bad base64 are ordinary values (nil and a message) because
// they come from clients; wrong argument types raise because they are bugs in
// the script.
//
// The Go side is layered the same way: VerifyHS256 and SignHS256 work without
// Lua, and the module is a thin binding over them with an injectable clock.
// Claims are converted with package luavalue so that they look exactly like
// the output of json.decode, and jwt_sign encodes exactly like json.encode.
//
// The module knows nothing of the engine, the router, connections or other
// modules; it is a self-describing value (Name, Open) that the engine holds in
// an explicit registry and preloads into each VM it builds.
package crypto
