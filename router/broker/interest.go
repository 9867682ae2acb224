package broker

import "sync"

// Interest is the set of rooms a node wants broadcasts for, kept apart
// from what the broker connection has actually subscribed. The router
// changes it from its hot paths (WatchRoom must not wait for the network),
// and the broker's own goroutine reconciles the connection with it: after
// a burst of joins and leaves, or after a reconnect, one Diff says what to
// subscribe and unsubscribe.
type Interest struct {
	mu      sync.Mutex
	want    map[string]struct{}
	changed chan struct{}
}

// NewInterest returns an empty set.
func NewInterest() *Interest {
	return &Interest{want: make(map[string]struct{}), changed: make(chan struct{}, 1)}
}

// Add wants room.
func (i *Interest) Add(room string) {
	i.mu.Lock()
	i.want[room] = struct{}{}
	i.mu.Unlock()
	i.poke()
}

// Remove no longer wants room.
func (i *Interest) Remove(room string) {
	i.mu.Lock()
	delete(i.want, room)
	i.mu.Unlock()
	i.poke()
}

func (i *Interest) poke() {
	select {
	case i.changed <- struct{}{}:
	default:
	}
}

// Changed is signalled (coalesced) after Add or Remove.
func (i *Interest) Changed() <-chan struct{} { return i.changed }

// Has reports whether room is wanted.
func (i *Interest) Has(room string) bool {
	i.mu.Lock()
	_, ok := i.want[room]
	i.mu.Unlock()
	return ok
}

// Len returns the number of wanted rooms.
func (i *Interest) Len() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.want)
}

// Diff compares the wanted set with have (what the connection holds) and
// returns the rooms to subscribe and to unsubscribe. It does not change
// have: the caller updates it once the broker has confirmed.
func (i *Interest) Diff(have map[string]struct{}) (add, remove []string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for r := range i.want {
		if _, ok := have[r]; !ok {
			add = append(add, r)
		}
	}
	for r := range have {
		if _, ok := i.want[r]; !ok {
			remove = append(remove, r)
		}
	}
	return add, remove
}
