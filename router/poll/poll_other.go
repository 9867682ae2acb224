//go:build !linux

package poll

import (
	"net"
	"syscall"
)

// Poller is unavailable on this platform; New always fails with
// ErrUnsupported and the router reads with a goroutine per connection.
type Poller struct{}

// Desc is a socket's registration; here only its token is kept.
type Desc struct{ token uint64 }

// Init records the token; there is no poller to bind the socket to.
func (d *Desc) Init(rc syscall.RawConn, token uint64) { d.token = token }

// Token returns the token Init bound.
func (d *Desc) Token() uint64 { return d.token }

// RawConn returns nil: there is no poller, so no socket is bound.
func (d *Desc) RawConn() syscall.RawConn { return nil }

// New reports ErrUnsupported.
func New(handle func(token uint64, hangup bool)) (*Poller, error) { return nil, ErrUnsupported }

// Add is never called: New fails.
func (p *Poller) Add(d *Desc) error { return ErrUnsupported }

// Remove is never called: New fails.
func (p *Poller) Remove(d *Desc) error { return nil }

// Run is never called: New fails.
func (p *Poller) Run() error { return ErrUnsupported }

// Close is never called: New fails.
func (p *Poller) Close() error { return nil }

// FD is never made on this platform: there is no poller to read it.
type FD struct{}

// Own reports false: sockets stay net's.
func (f *FD) Own(nc net.Conn) bool { return false }

// Close does nothing: no FD is made.
func (f *FD) Close() error { return nil }

// NetConn reports ErrUnsupported: no FD is made.
func (f *FD) NetConn() (net.Conn, error) { return nil, ErrUnsupported }

// Control reports ErrUnsupported: no FD is made.
func (f *FD) Control(fn func(fd uintptr)) error { return ErrUnsupported }

// Read reports ErrUnsupported: no FD is made.
func (f *FD) Read(fn func(fd uintptr) bool) error { return ErrUnsupported }

// Write reports ErrUnsupported: no FD is made.
func (f *FD) Write(fn func(fd uintptr) bool) error { return ErrUnsupported }
