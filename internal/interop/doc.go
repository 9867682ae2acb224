// Package interop holds tests that drive moonwire with third-party
// WebSocket clients — Python's websockets and Node's ws — run as separate
// processes, exactly as users run them. Each test skips when its client is
// not installed (Debian: python3-websockets, node-ws).
package interop
