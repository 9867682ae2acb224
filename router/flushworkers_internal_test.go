package router

import "testing"

// TestFlushWorkers: half as many flush workers as readers, never none.
func TestFlushWorkers(t *testing.T) {
	for _, tc := range []struct{ readers, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {16, 8}} {
		if got := flushWorkers(tc.readers); got != tc.want {
			t.Errorf("flushWorkers(%d) = %d, want %d", tc.readers, got, tc.want)
		}
	}
}
