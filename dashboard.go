package moonwire

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/moonwire/moonwire/internal/admin"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/broker"
)

// What the operator dashboard (internal/admin) reads from the node and
// asks of it, beyond /metrics: the reload history, rooms and members, the
// cluster's nodes, and the close and reload actions.

// maxReloadHistory is how many reload attempts the dashboard lists.
const maxReloadHistory = 20

// nodesRoom is the presence room where every node of a cluster publishes
// its own figures (a beacon, keyed by node id, refreshed every
// beaconEvery), so that any node's dashboard lists them all; a node that
// dies leaves it within the broker's presence_ttl. Scripts may join a
// room of that name too: their members are not beacons and are ignored.
const nodesRoom = "_moonwire.nodes"

// beaconEvery is how often a node refreshes its beacon.
const beaconEvery = 2 * time.Second

var _ admin.DashboardSource = adminSource{}

// Node implements admin.DashboardSource.
func (a adminSource) Node() (string, string) { return a.s.Router.NodeID(), a.s.version() }

// Started implements admin.DashboardSource.
func (a adminSource) Started() time.Time { return a.s.started }

// RouteInfo implements admin.DashboardSource.
func (a adminSource) RouteInfo() []admin.RouteInfo {
	live := a.s.live.Load()
	out := make([]admin.RouteInfo, 0, len(live.cfg.Routes))
	for _, rc := range live.cfg.Routes {
		out = append(out, admin.RouteInfo{Path: rc.Path, Script: rc.Script, Version: live.handlers[rc.Path].Version(), LoadedAt: live.loaded[rc.Path]})
	}
	return out
}

// Reloads implements admin.DashboardSource.
func (a adminSource) Reloads() []admin.ReloadEntry {
	a.s.statusMu.Lock()
	defer a.s.statusMu.Unlock()
	return slices.Clone(a.s.reloads)
}

// Rooms implements admin.DashboardSource.
func (a adminSource) Rooms() []admin.RoomSize {
	rooms := a.s.Router.LocalRooms()
	out := make([]admin.RoomSize, len(rooms))
	for i, r := range rooms {
		out[i] = admin.RoomSize{Name: r.Name, Members: r.Members}
	}
	return out
}

// Members implements admin.DashboardSource. The router asks the broker
// under its own bounded wait (router.Config.BrokerWait).
func (a adminSource) Members(ctx context.Context, room string) (map[string][]byte, bool, error) {
	_, presence := a.s.broker.(broker.Presence)
	m, err := a.s.Router.Presence(room)
	return m, presence, err
}

// Nodes implements admin.DashboardSource: the beacons in nodesRoom.
func (a adminSource) Nodes(ctx context.Context) ([]admin.NodeSummary, bool) {
	p, ok := a.s.broker.(broker.Presence)
	if !ok {
		return nil, false
	}
	self := a.s.Router.NodeID()
	members, err := p.Members(ctx, nodesRoom)
	if err != nil {
		// The broker is away: this node is all that can be said.
		members = map[string][]byte{}
	}
	if _, ok := members[self]; !ok {
		members[self] = a.s.beacon() // not published yet, or the broker is away
	}
	now := time.Now().UnixMilli()
	out := make([]admin.NodeSummary, 0, len(members))
	for id, info := range members {
		var n nodeBeacon
		if json.Unmarshal(info, &n) != nil || !n.Node || n.ID != id {
			continue // a script's member of a room with this name
		}
		out = append(out, admin.NodeSummary{ID: id, Self: id == self, Connections: n.Connections, Rooms: n.Rooms,
			Connected: n.Connected, Queued: n.Queued, At: n.At, AgeMs: max(0, now-n.At)})
	}
	slices.SortFunc(out, func(x, y admin.NodeSummary) int {
		if x.Self != y.Self {
			if x.Self {
				return -1
			}
			return 1
		}
		return strings.Compare(x.ID, y.ID)
	})
	return out, true
}

// CloseConn implements admin.DashboardSource. A connection of another
// node is asked to close through the broker, best effort.
func (a adminSource) CloseConn(id string, code int, reason string) error {
	err := a.s.Router.CloseConn(id, code, reason)
	if errors.Is(err, router.ErrClosed) {
		return admin.ErrNoConn
	}
	return err
}

// ReloadNow implements admin.DashboardSource.
func (a adminSource) ReloadNow() (admin.ReloadEntry, error) {
	if a.s.Config().Dir == "" {
		return admin.ReloadEntry{}, admin.ErrNotReloadable
	}
	e, err := a.s.reloadBy("dashboard")
	if errors.Is(err, ErrClosing) {
		return admin.ReloadEntry{}, err
	}
	return e, nil // a failed reload is an entry with its error, not a failed request
}

// nodeBeacon is what a node publishes in nodesRoom.
type nodeBeacon struct {
	Node        bool   `json:"moonwire_node"`
	ID          string `json:"id"`
	Connections int64  `json:"connections"`
	Rooms       int    `json:"rooms"`
	Connected   bool   `json:"broker_connected"`
	Queued      int    `json:"broker_queued"`
	At          int64  `json:"at"`
}

// beacon is this node's nodeBeacon, encoded.
func (s *Server) beacon() []byte {
	b := nodeBeacon{Node: true, ID: s.Router.NodeID(), Connections: s.Router.Stats().Connections,
		Rooms: len(s.Router.LocalRooms()), At: time.Now().UnixMilli()}
	if r, ok := s.broker.(broker.Reporter); ok {
		st := r.Stats()
		b.Connected, b.Queued = st.Connected, st.Queued
	}
	out, _ := json.Marshal(b)
	return out
}

// startBeacon publishes this node's beacon every beaconEvery, from New
// until the node is released, when the broker keeps presence.
func (s *Server) startBeacon() {
	p, ok := s.broker.(broker.Presence)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.beaconStop = func() {
		cancel()
		<-done
		p.PresenceLeave(nodesRoom, s.Router.NodeID())
	}
	go func() {
		defer close(done)
		t := time.NewTicker(beaconEvery)
		defer t.Stop()
		for {
			p.PresenceJoin(nodesRoom, s.Router.NodeID(), s.beacon())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// stopBeacon stops the beacon and takes it out of nodesRoom; once only.
func (s *Server) stopBeacon() {
	s.beaconOnce.Do(func() {
		if s.beaconStop != nil {
			s.beaconStop()
		}
	})
}

// recordReload adds a reload attempt to the history, newest first. The
// caller holds statusMu.
func (s *Server) recordReload(e admin.ReloadEntry) {
	s.reloads = slices.Insert(s.reloads, 0, e)
	if len(s.reloads) > maxReloadHistory {
		s.reloads = s.reloads[:maxReloadHistory]
	}
}

// loadedTimes says when each route's handler was built: a handler the
// reload kept keeps its time, a new one gets now.
func loadedTimes(prev *served, handlers map[string]*lua.Route, now time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(handlers))
	for path, h := range handlers {
		out[path] = now
		if prev != nil && prev.handlers[path] == h {
			out[path] = prev.loaded[path]
		}
	}
	return out
}

// version is the moonwire version the node reports.
func (s *Server) version() string {
	if s.opts.Version != "" {
		return s.opts.Version
	}
	return "devel"
}

// CanReload implements admin.ReloadCapable: a node on the embedded
// configuration has no file to read again.
func (a adminSource) CanReload() bool { return a.s.Config().Dir != "" }
