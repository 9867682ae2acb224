package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/moonwire/moonwire/router/config"
)

// ReloadStatus is the outcome of the last reload, for health checks and
// metrics.
type ReloadStatus struct {
	Reloads  int64     // successful reloads
	Failures int64     // failed reloads
	At       time.Time // of the last attempt; zero before any
	OK       bool      // whether the last attempt succeeded
	Err      string    // its error ("file:line: message" for scripts)
	Changed  []string  // routes whose handler changed in the last success
}

// Status returns the outcome of the last reload.
func (n *Node) Status() ReloadStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.status
	st.Changed = slices.Clone(st.Changed)
	return st
}

// ErrNotReloadable is returned for a node whose config is the embedded one.
var ErrNotReloadable = errors.New("the embedded configuration cannot be reloaded; run with -config FILE")

// Reload re-reads the config file and every script and applies them without
// dropping connections: build aside, validate, swap, retire (see
// router.Server.Reconfigure). On any error the running version keeps
// serving, the error is returned and recorded in Status, and nothing is
// half-applied.
func (n *Node) Reload() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return ErrClosing // not a failure: nothing is reloaded any more
	}
	changed, err := n.reload()
	n.status.At = time.Now()
	n.status.OK = err == nil
	if err != nil {
		n.status.Failures++
		n.status.Err = err.Error()
		n.log.Error("reload failed; the running version keeps serving", "err", err)
		return err
	}
	n.status.Reloads++
	n.status.Err = ""
	n.status.Changed = changed
	n.log.Info("reloaded", "file", n.cfg.File, "changed", changed)
	return nil
}

// ErrClosing is returned by a reload asked for once the node is shutting
// down.
var ErrClosing = errors.New("the node is shutting down; not reloading")

func (n *Node) reload() ([]string, error) {
	if n.cfg.Dir == "" {
		return nil, ErrNotReloadable
	}
	cfg, err := config.Load(n.cfg.File)
	if err != nil {
		return nil, err
	}
	if err := liveCompatible(n.cfg, cfg); err != nil {
		return nil, err
	}
	// Certificates are re-read (same paths: renewals apply live) before
	// anything is built, so a bad certificate fails the whole reload.
	var cert *tls.Certificate
	if n.certs != nil {
		c, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%s: server.tls_cert: %w", cfg.File, err)
		}
		cert = &c
	}
	handlers, err := n.build(cfg, n.handlers)
	if err != nil {
		return nil, err
	}
	if err := n.Router.Reconfigure(n.routerConfig(cfg, handlers)); err != nil {
		releaseAll(handlers, n.handlers)
		return nil, err
	}
	var changed []string
	for _, rc := range cfg.Routes {
		if n.handlers[rc.Path] != handlers[rc.Path] {
			changed = append(changed, rc.Path)
		}
	}
	// Handlers no longer used were stopped by the router (retired routes
	// stop once drained); nothing else holds them.
	n.cfg, n.handlers = cfg, handlers
	if cert != nil {
		n.certs.cert.Store(cert)
	}
	return changed, nil
}

// liveCompatible refuses a new config that changes what cannot change in a
// running process.
func liveCompatible(old, cfg *config.Config) error {
	fixed := []struct {
		key      string
		old, new any
	}{
		{"server.listen", old.Server.Listen, cfg.Server.Listen},
		{"server.tls_cert", old.Server.TLSCert, cfg.Server.TLSCert},
		{"server.tls_key", old.Server.TLSKey, cfg.Server.TLSKey},
		{"server.compression", old.Server.Compression, cfg.Server.Compression},
		{"admin.listen", old.Admin.Listen, cfg.Admin.Listen},
		{"admin.pprof", old.Admin.Pprof, cfg.Admin.Pprof},
		{"scripts.memory_limit", old.Scripts.MemoryLimit, cfg.Scripts.MemoryLimit},
		{"broker.kind", old.Broker.Kind, cfg.Broker.Kind},
		{"broker.url", old.Broker.URL, cfg.Broker.URL},
	}
	for _, f := range fixed {
		if !reflect.DeepEqual(f.old, f.new) {
			return fmt.Errorf("%s: reload not supported for %s: old=%v, new=%v", cfg.File, f.key, f.old, f.new)
		}
	}
	// A route keeps its lanes (one per VM) across a reload.
	for i, rc := range cfg.Routes {
		for _, o := range old.Routes {
			if o.Path == rc.Path && o.Script == rc.Script && o.VMs != rc.VMs {
				return fmt.Errorf("%s: reload not supported for routes[%d].vms: old=%d, new=%d", cfg.File, i, o.VMs, rc.VMs)
			}
		}
	}
	return nil
}
