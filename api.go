package moonwire

import "github.com/moonwire/moonwire/router/config"

// startAPI starts the server HTTP API listener when [api] listen is set.
func (s *Server) startAPI(cfg *config.Config) error { return nil }

// closeAPI stops the server HTTP API listener, if any.
func (s *Server) closeAPI() {}
