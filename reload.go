package moonwire

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/moonwire/moonwire/internal/admin"
	"github.com/moonwire/moonwire/plugins/lua"
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
	// Changed lists, for the last success, the routes it added or whose
	// script, settings or limits it changed; Removed the routes it took
	// away, and Server the other settings it changed ("server.max_connections").
	Changed []string
	Removed []string
	Server  []string
}

// Status returns the outcome of the last reload.
func (s *Server) Status() ReloadStatus {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	st := s.status
	st.Changed = slices.Clone(st.Changed)
	st.Removed = slices.Clone(st.Removed)
	st.Server = slices.Clone(st.Server)
	return st
}

// ErrNotReloadable is returned for a node whose config is the embedded one.
var ErrNotReloadable = errors.New("the embedded configuration cannot be reloaded; run with -config FILE")

// Reload re-reads the config file and every script and applies them without
// dropping connections: build aside, validate, swap, retire (see
// router.Server.Reconfigure). On any error the running version keeps
// serving, the error is returned and recorded in Status, and nothing is
// half-applied.
func (s *Server) Reload() error { return s.ReloadBy("call") }

// ReloadBy is Reload, recording who asked in the reload history the admin
// dashboard shows: "signal" (SIGHUP), "watch" (scripts.watch), "dashboard"
// (its reload action); Reload records "call".
func (s *Server) ReloadBy(by string) error {
	_, err := s.reloadBy(by)
	return err
}

// reloadBy reloads and returns the attempt's history entry.
func (s *Server) reloadBy(by string) (admin.ReloadEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return admin.ReloadEntry{}, ErrClosing // not a failure: nothing is reloaded any more
	}
	diff, err := s.reload()
	if errors.Is(err, lua.ErrStopping) {
		return admin.ReloadEntry{}, ErrClosing // the shutdown cut the build short: not a failure
	}
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	now := time.Now()
	s.status.At = now
	s.status.OK = err == nil
	e := admin.ReloadEntry{At: now.UnixMilli(), OK: err == nil, By: by}
	if err != nil {
		s.status.Failures++
		s.status.Err = err.Error()
		e.Error = s.status.Err
		s.recordReload(e)
		s.log.Error("reload failed; the running version keeps serving", "err", err, "by", by)
		return e, err
	}
	s.status.Reloads++
	s.status.Err = ""
	s.status.Changed, s.status.Removed, s.status.Server = diff.routes, diff.removed, diff.server
	e.Changed, e.Removed, e.Server = slices.Clone(diff.routes), slices.Clone(diff.removed), slices.Clone(diff.server)
	s.recordReload(e)
	s.log.Info("reloaded", "file", s.cfg.File, "changed", diff.routes, "removed", diff.removed, "settings", diff.server, "by", by)
	return e, nil
}

// reloadDiff is what a reload changed.
type reloadDiff struct {
	routes  []string // added, or with a new handler, settings or limits
	removed []string
	server  []string // other keys, dotted
}

// diffConfigs compares two configs and their handlers, so the reload log
// says what changed: a route whose rate_limit changed is as changed as one
// whose script did.
func diffConfigs(old, cfg *config.Config, oldH, newH map[string]*lua.Route) reloadDiff {
	var d reloadDiff
	before := map[string]config.Route{}
	for _, rc := range old.Routes {
		before[rc.Path] = rc
	}
	for _, rc := range cfg.Routes {
		prev, ok := before[rc.Path]
		delete(before, rc.Path)
		if !ok || oldH[rc.Path] != newH[rc.Path] || !reflect.DeepEqual(prev, rc) {
			d.routes = append(d.routes, rc.Path)
		}
	}
	for _, rc := range old.Routes {
		if _, gone := before[rc.Path]; gone {
			d.removed = append(d.removed, rc.Path)
		}
	}
	for _, sec := range []struct {
		name     string
		old, new any
	}{
		{"server", old.Server, cfg.Server},
		{"heartbeat", old.Heartbeat, cfg.Heartbeat},
		{"scripts", old.Scripts, cfg.Scripts},
		{"admin", old.Admin, cfg.Admin},
		{"store", old.Store, cfg.Store},
		{"api", old.API, cfg.API},
	} {
		d.server = append(d.server, changedFields(sec.name, sec.old, sec.new)...)
	}
	names := map[string]bool{}
	for n := range old.Plugins {
		names[n] = true
	}
	for n := range cfg.Plugins {
		names[n] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if !old.Plugin(n).Equal(cfg.Plugin(n)) {
			d.server = append(d.server, "plugins."+n)
		}
	}
	return d
}

// changedFields names the fields of two structs of one type that differ,
// as "section.Field" in the config's key spelling where the names agree
// (MaxConnections is max_connections). Filesystems are compared by the
// folder they stand for, so a reload's fresh one is no change.
func changedFields(section string, a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		f := va.Type().Field(i)
		if f.Type.String() == "fs.FS" || f.Name == "MemoryLimitSet" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, section+"."+snake(f.Name))
		}
	}
	return out
}

// snake turns a Go field name into the config's key spelling.
func snake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if 'A' <= r && r <= 'Z' {
			if i > 0 && !('A' <= rune(name[i-1]) && rune(name[i-1]) <= 'Z') {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ErrClosing is returned by a reload asked for once the node is shutting
// down.
var ErrClosing = errors.New("the node is shutting down; not reloading")

func (s *Server) reload() (reloadDiff, error) {
	if s.cfg.Dir == "" {
		return reloadDiff{}, ErrNotReloadable
	}
	cfg, err := config.Load(s.cfg.File)
	if err != nil {
		return reloadDiff{}, err
	}
	if err := s.liveCompatible(s.cfg, cfg); err != nil {
		return reloadDiff{}, err
	}
	// Certificates are re-read (same paths: renewals apply live) before
	// anything is built, so a bad certificate fails the whole reload.
	var cert *tls.Certificate
	if s.certs != nil {
		c, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
		if err != nil {
			return reloadDiff{}, fmt.Errorf("%s: server.tls_cert: %w", cfg.File, err)
		}
		cert = &c
	}
	mods, apply, err := s.reloadModules(cfg)
	if err != nil {
		return reloadDiff{}, err
	}
	handlers, err := s.build(cfg, mods, s.handlers)
	if err != nil {
		mods.close(s.mods.all)
		return reloadDiff{}, err
	}
	if err := s.Router.Reconfigure(s.routerConfig(cfg, handlers)); err != nil {
		releaseAll(handlers, s.handlers)
		mods.close(s.mods.all)
		return reloadDiff{}, err
	}
	for _, f := range apply {
		f()
	}
	s.mods = mods
	diff := diffConfigs(s.cfg, cfg, s.handlers, handlers)
	// Handlers no longer used were stopped by the router (retired routes
	// stop once drained); nothing else holds them.
	s.live.Store(&served{cfg, handlers, loadedTimes(s.live.Load(), handlers, time.Now())})
	s.cfg, s.handlers = cfg, handlers
	if cert != nil {
		s.certs.cert.Store(cert)
	}
	return diff, nil
}

// reloadModules prepares the modules cfg needs, aside: the running
// instances are kept, a module a route now lists for the first time is
// made, and an instance whose table changed takes it through
// Reconfigure, whose apply functions run once the rest of the reload has
// succeeded. A changed table whose plugin cannot take it live is refused.
func (s *Server) reloadModules(cfg *config.Config) (*modules, []func(), error) {
	if k := cfg.Broker.Kind; !s.cfg.Plugin(k).Equal(cfg.Plugin(k)) {
		return nil, nil, fmt.Errorf("%s: reload not supported for plugins.%s: the broker takes its table only at start", cfg.File, k)
	}
	mods, err := buildModules(cfg, s.log, s.Metrics, s.mods.all)
	if err != nil {
		return nil, nil, err
	}
	var apply []func()
	for _, name := range mods.names() {
		m := mods.all[name]
		if s.mods.all[name] != m {
			continue // new: made from cfg
		}
		mods.applied[name] = s.mods.applied[name]
		if r, ok := m.(Reconfigurer); ok {
			f, err := r.Reconfigure(moduleContext(cfg, name, s.log, s.Metrics))
			if err != nil {
				mods.close(s.mods.all)
				return nil, nil, fmt.Errorf("module %s: %w", name, err)
			}
			if f != nil {
				apply = append(apply, f)
			}
			mods.applied[name] = cfg.Plugin(name)
			continue
		}
		// Compared with the table the instance runs with, not the running
		// config's: an idle instance listed again may have missed edits.
		if !s.mods.applied[name].Equal(cfg.Plugin(name)) {
			mods.close(s.mods.all)
			return nil, nil, fmt.Errorf("%s: reload not supported for plugins.%s: the %s module takes its table only at start", cfg.File, name, name)
		}
	}
	// Instances no route lists any more stay, idle (see modules.idle).
	for name, m := range s.mods.all {
		if _, wanted := mods.all[name]; !wanted {
			mods.all[name], mods.optional[name], mods.idle[name] = m, s.mods.optional[name], true
			mods.applied[name] = s.mods.applied[name]
		}
	}
	return mods, apply, nil
}

// liveCompatible refuses a new config that changes what cannot change in a
// running process.
func (s *Server) liveCompatible(old, cfg *config.Config) error {
	fixed := []struct {
		key      string
		old, new any
	}{
		{"server.listen", old.Server.Listen, cfg.Server.Listen},
		{"server.tls_cert", old.Server.TLSCert, cfg.Server.TLSCert},
		{"server.tls_key", old.Server.TLSKey, cfg.Server.TLSKey},
		{"server.compression", old.Server.Compression, cfg.Server.Compression},
		{"admin.listen", old.Admin.Listen, cfg.Admin.Listen},
		{"api.listen", old.API.Listen, cfg.API.Listen}, // keys and max_body apply live
		{"admin.pprof", old.Admin.Pprof, cfg.Admin.Pprof},
		{"admin.pprof_public", old.Admin.PprofPublic, cfg.Admin.PprofPublic},
		{"admin.token", old.Admin.Token != cfg.Admin.Token, false}, // never print a token
		{"scripts.memory_limit", s.memoryLimit(old), s.memoryLimit(cfg)},
		{"broker.kind", old.Broker.Kind, cfg.Broker.Kind},
		{"broker.url", old.Broker.URL, cfg.Broker.URL},
		{"broker.prefix", old.Broker.Prefix, cfg.Broker.Prefix},
		{"broker.timeout", old.Broker.Timeout, cfg.Broker.Timeout},
		{"broker.outbox", old.Broker.Outbox, cfg.Broker.Outbox},
		{"broker.start_degraded", old.Broker.StartDegraded, cfg.Broker.StartDegraded},
		{"broker.presence_ttl", old.Broker.PresenceTTL, cfg.Broker.PresenceTTL},
		{"store.kind", old.Store.Kind, cfg.Store.Kind},
		{"store.url", old.Store.URL, cfg.Store.URL},
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
