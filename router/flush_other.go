//go:build !linux

package router

import "github.com/moonwire/moonwire/router/internal/uring"

// flushRing is Linux's (io_uring): elsewhere the plain flush worker runs.
func (s *Server) flushRing() *uring.Ring { return nil }

// flushBatched never runs here: flushRing gives no ring.
func (s *Server) flushBatched(*uring.Ring) {}
