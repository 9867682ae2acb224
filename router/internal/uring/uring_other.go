//go:build !linux

// Package uring is the least of io_uring(7) that the router's flush
// workers need; elsewhere than Linux there is none, and New fails.
package uring

import "errors"

// Ring is unavailable on this system.
type Ring struct{}

// New fails: io_uring is Linux's.
func New(uint32) (*Ring, error) { return nil, errors.New("uring: io_uring is Linux only") }
