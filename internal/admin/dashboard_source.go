package admin

import (
	"context"
	"errors"
	"time"
)

// DashboardSource is what the dashboard reads and acts on beyond Source;
// the node (package moonwire) implements it. Every method may be called
// from several goroutines at once.
type DashboardSource interface {
	Source
	// Node returns this node's id and the moonwire version it runs.
	Node() (id, version string)
	// Started is when the node started.
	Started() time.Time
	// RouteInfo describes the served routes, in config order.
	RouteInfo() []RouteInfo
	// Reloads returns the latest reload attempts, newest first.
	Reloads() []ReloadEntry
	// Rooms returns this node's rooms with members.
	Rooms() []RoomSize
	// Members returns room's members: across the cluster (presence true)
	// when the broker keeps presence, else this node's. info is the JSON
	// a member published (nil: none).
	Members(ctx context.Context, room string) (members map[string][]byte, presence bool, err error)
	// Nodes returns the cluster's nodes as they last reported themselves,
	// this node first; ok is false when there is no broker that keeps
	// presence (a single node).
	Nodes(ctx context.Context) (nodes []NodeSummary, ok bool)
	// CloseConn closes a connection of any node with code and reason;
	// ErrNoConn when it is this node's and gone (or never was).
	CloseConn(id string, code int, reason string) error
	// ReloadNow reloads the configuration and scripts, as SIGHUP does, and
	// returns the attempt's entry (by "dashboard"). ErrNotReloadable when
	// the node runs on the embedded configuration.
	ReloadNow() (ReloadEntry, error)
}

// RouteInfo is a served route and the script version it runs.
type RouteInfo struct {
	Path     string
	Script   string
	Version  string
	LoadedAt time.Time
}

// Errors of DashboardSource.
var (
	ErrNoConn        = errors.New("no such connection")
	ErrNotReloadable = errors.New("this node runs on the embedded configuration, which cannot be reloaded")
)
