package bufpool

import "testing"

func TestGetPutClasses(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 5000, 1 << 20, 1<<24 + 1} {
		b := Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d): len %d", n, len(b))
		}
		if n <= 1<<maxShift {
			if c := cap(b); c&(c-1) != 0 || c < n {
				t.Fatalf("Get(%d): cap %d is not a class size", n, c)
			}
		}
		Put(b)
	}
	Put(make([]byte, 1000)) // not a class size: dropped, must not panic
}

func TestGetPutNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	Put(Get(4096))
	allocs := testing.AllocsPerRun(1000, func() { Put(Get(4096)) })
	if allocs > 0 {
		t.Fatalf("Get/Put allocates %.1f times per round", allocs)
	}
}

func BenchmarkGetPut(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Put(Get(4096))
	}
}
