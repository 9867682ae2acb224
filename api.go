package moonwire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/moonwire/moonwire/internal/api"
	"github.com/moonwire/moonwire/router/config"
)

// apiServer is a node's server HTTP API listener.
type apiServer struct {
	h    *api.Handler
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve returns
}

// startAPI starts the server HTTP API listener when [api] listen is set.
// Its keys and body limit are read from the live config on every
// request, so a reload's new keys apply at once; its address cannot
// change live (liveCompatible refuses it).
func (s *Server) startAPI(cfg *config.Config) error {
	if cfg.API.Listen == "" {
		return nil
	}
	h, err := api.New(api.Options{
		Router: s.Router,
		Settings: func() api.Settings {
			a := &s.Config().API
			return api.Settings{Keys: a.Keys, MaxBody: a.MaxBody}
		},
		Logger:  s.log.With("component", "api"),
		Metrics: s.Metrics,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		h.Close()
		return fmt.Errorf("%s: api.listen: %w", cfg.File, err)
	}
	a := &apiServer{h: h, srv: api.NewServer(h, s.log, 0), ln: ln, done: make(chan struct{})}
	s.api.Store(a)
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api listener stopped", "err", err)
		}
	}()
	return nil
}

// closeAPI stops the server HTTP API listener, if any: requests in
// flight get a second to finish, then their connections are closed.
func (s *Server) closeAPI() {
	a := s.api.Swap(nil)
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	a.h.Close()
}

// APIAddr returns the server API listener's address, or "" when it is
// off.
func (s *Server) APIAddr() string {
	if a := s.api.Load(); a != nil {
		return a.ln.Addr().String()
	}
	return ""
}
