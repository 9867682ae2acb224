package store_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/storetest"
)

// TestConformance runs the backends' shared suite against the memory
// backend, on a fake clock that advance moves, so that TTLs are exact.
func TestConformance(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clocks := map[string]*atomic.Int64{}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, ns string) store.Backend {
			c := new(atomic.Int64)
			c.Store(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
			mu.Lock()
			clocks[ns] = c
			mu.Unlock()
			s := store.New(store.Options{Now: func() time.Time { return time.Unix(0, c.Load()) }})
			t.Cleanup(func() { _ = s.Close() })
			return s.Backend()
		},
		Advance: func(t *testing.T, ns string, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			clocks[ns].Add(int64(d))
		},
	})
}
