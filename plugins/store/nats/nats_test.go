package nats

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/storetest"
)

const (
	sharedAddr = "127.0.0.1:4222"
	sharedURL  = "nats://" + sharedAddr
)

// shared skips the test when the machine's NATS server is not running.
func shared(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", sharedAddr, 2*time.Second)
	if err != nil {
		t.Skipf("no NATS server at %s (%v): start one (nats-server -js) to run the NATS store tests", sharedAddr, err)
	}
	_ = c.Close()
	return sharedURL
}

// open returns a backend on bucket ns_store, deleted when t ends.
func open(t *testing.T, ns string) store.Backend {
	t.Helper()
	return openWith(t, Options{URL: shared(t), Prefix: ns, Timeout: 5 * time.Second, SweepInterval: -1})
}

func openWith(t *testing.T, opts Options) *Backend {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteBucket(t, b.bucket)
	})
	return b
}

// deleteBucket deletes the bucket on a connection of its own (the test
// may have closed its backends').
func deleteBucket(t *testing.T, bucket string) {
	t.Helper()
	nc, err := natsgo.Connect(sharedURL)
	if err != nil {
		t.Errorf("deleting bucket %s: %v", bucket, err)
		return
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err == nil {
		err = js.DeleteKeyValue(ctx, bucket)
	}
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting bucket %s: %v", bucket, err)
	}
}

func harness() storetest.Harness {
	return storetest.Harness{
		Open: open,
		// Expiry is by this machine's clock, which has passed the TTL
		// once the sleep returns.
		Advance: func(t *testing.T, ns string, d time.Duration) { time.Sleep(d + time.Millisecond) },
		Shared:  true,
	}
}

// TestConformance runs the suite every backend passes.
func TestConformance(t *testing.T) {
	t.Parallel()
	shared(t)
	storetest.Run(t, harness())
}

// TestNodes: three backends on one bucket are three nodes of one store.
func TestNodes(t *testing.T) {
	t.Parallel()
	shared(t)
	storetest.RunNodes(t, harness())
}

// TestLayout: the bucket is named from the prefix, keys are base64url (or
// hashed, the key then in the envelope) and decode back in Keys.
func TestLayout(t *testing.T) {
	t.Parallel()
	ns := storetest.Namespace()
	b := open(t, ns).(*Backend)
	if b.bucket != ns+"_store" {
		t.Fatalf("bucket %q", b.bucket)
	}
	long := strings.Repeat("é", 600) // 1200 bytes: hashed
	for _, k := range []string{"", "a.b", "*", ">", "x y", long} {
		if err := b.Set(k, k, 0); err != nil {
			t.Fatalf("Set(%.20q): %v", k, err)
		}
	}
	ctx := context.Background()
	names, err := b.kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hashes := 0
	for _, n := range names {
		if strings.HasPrefix(n, "h") {
			hashes++
		}
		if len(n) > 1000 {
			t.Errorf("bucket key of %d characters", len(n))
		}
	}
	if len(names) != 6 || hashes != 1 {
		t.Fatalf("bucket keys %q", names)
	}
	e, err := b.kv.Get(ctx, kvKey("a.b"))
	if err != nil || string(e.Value()) != "e0;s3:a.b" {
		t.Fatalf("raw entry %q, %v", e.Value(), err)
	}
	if v, ok, err := b.Get(long); err != nil || !ok || v != long {
		t.Fatalf("Get(long) = %.20q, %v, %v", v, ok, err)
	}
	// A value another program wrote is reported, not misread.
	if _, err := b.kv.Put(ctx, kvKey("junk"), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get("junk"); err == nil || !strings.HasPrefix(err.Error(), "store: nats: get") {
		t.Fatalf("Get of a foreign value: %v", err)
	}
	if _, err := b.Incr("junk", 1, 0); err == nil || errors.Is(err, store.ErrNotNumber) {
		t.Fatalf("Incr of a foreign value: %v", err)
	}
	if _, err := New(Options{URL: sharedURL, Prefix: "a.b"}); err == nil || !strings.Contains(err.Error(), `prefix "a.b"`) {
		t.Fatalf("New with a dotted prefix: %v", err)
	}
}

// TestTTLExpiry: an entry expires for every node at its TTL, no earlier;
// Get purges it; the janitor purges expired entries nobody reads and the
// markers deletes leave, so that the bucket does not grow with them.
func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	ns := storetest.Namespace()
	a := open(t, ns).(*Backend)
	b := open(t, ns).(*Backend)
	const ttl = 300 * time.Millisecond
	start := time.Now()
	if err := a.Set("k", "v", ttl); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"x1", "x2", "x3"} {
		if err := a.Set(k, 1.0, ttl); err != nil {
			t.Fatal(err)
		}
	}
	setAll := time.Now() // x1..x3 expire before setAll+ttl
	if err := a.Set("del", 1.0, 0); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Delete("del"); err != nil || !ok {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if err := a.Set("keep", 1.0, 0); err != nil {
		t.Fatal(err)
	}
	deadline := start.Add(10 * time.Second)
	for {
		_, ok, err := b.Get("k")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took < ttl {
		t.Fatalf("expired after %v, before its TTL of %v", took, ttl)
	}
	ctx := context.Background()
	if _, err := a.kv.Get(ctx, kvKey("k")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the expired entry Get met is still stored: %v", err)
	}
	for time.Since(setAll) < ttl {
		time.Sleep(time.Millisecond)
	}
	n, err := a.Sweep()
	if err != nil || n != 4 {
		t.Fatalf("Sweep = %d, %v; want 3 expired entries and 1 delete marker", n, err)
	}
	info, err := a.stream.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages after the sweep, want 1 (keep): %v", info.State.Msgs, err)
	}
	if n, err := a.Sweep(); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v", n, err)
	}
	if v, ok, err := b.Get("keep"); err != nil || !ok || v != 1.0 {
		t.Fatalf("keep = %v, %v, %v", v, ok, err)
	}
}

// TestJanitor: with a SweepInterval, expired entries nobody reads are
// purged by the janitor, which Close stops.
func TestJanitor(t *testing.T) {
	t.Parallel()
	b := openWith(t, Options{URL: shared(t), Prefix: storetest.Namespace(), SweepInterval: 20 * time.Millisecond})
	if err := b.Set("k", 1.0, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := b.stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the janitor never purged the expired entry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = b.Close()
	select {
	case <-b.done:
	default:
		t.Fatal("Close returned before the janitor exited")
	}
	_ = b.Close()
}

// TestContention: an atomic operation that keeps losing gives up with an
// error, not a lost update, and the error names what happened.
func TestContention(t *testing.T) {
	t.Parallel()
	// A deadline far past the 100 attempts' backoff (about 1.6 s), so that
	// a loaded machine still sees them all.
	b := openWith(t, Options{URL: shared(t), Prefix: storetest.Namespace(), Timeout: time.Minute, SweepInterval: -1})
	calls := 0
	err := b.update("incr", "k", func(c current) (action, []byte, error) {
		calls++
		// Write behind the operation's back every time.
		if _, err := b.kv.Put(context.Background(), kvKey("k"), []byte("e0;n1;")); err != nil {
			t.Fatal(err)
		}
		return put, []byte("e0;n2;"), nil
	})
	if err == nil || !strings.Contains(err.Error(), "store: nats: incr: lost to concurrent writes") {
		t.Fatalf("update under constant contention: %v after %d calls", err, calls)
	}
	if calls != maxAttempts {
		t.Fatalf("%d attempts, want %d", calls, maxAttempts)
	}
}

// TestPayloadLimit: a value the server's max_payload cannot carry is
// refused as too large, like one over MaxValueBytes.
func TestPayloadLimit(t *testing.T) {
	t.Parallel()
	b := open(t, storetest.Namespace()).(*Backend)
	b.SetLimits(store.Options{MaxValueBytes: 64 << 20, MaxBytes: 1 << 30})
	big := strings.Repeat("x", int(b.nc.MaxPayload()))
	if err := b.Set("k", big, 0); !errors.Is(err, store.ErrValueTooLarge) {
		t.Fatalf("Set over max_payload: %v", err)
	}
	if _, err := b.Push("l", big, 5, 0); !errors.Is(err, store.ErrValueTooLarge) {
		t.Fatalf("Push over max_payload: %v", err)
	}
}

// TestStartErrors: New fails at once, naming the URL without its password
// and the cause, when the server cannot be reached.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	start := time.Now()
	_, err = New(Options{URL: "nats://u:s3cret@" + closed, Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "nats://u:xxxxx@"+closed) || strings.Contains(err.Error(), "s3cret") ||
		!strings.Contains(err.Error(), "no servers available") {
		t.Fatalf("New on a closed port: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("New on a closed port took %v", took)
	}
	if got := redact("tok@a:1, nats://u:p@b:2"); got != "nats://xxxxx@a:1,nats://u:xxxxx@b:2" {
		t.Fatalf("redact = %q", got)
	}
}

// TestOutage: when the server goes away under a working backend, every
// script call returns nil and an error within the timeout, both when the
// connection hangs and when the port refuses.
func TestOutage(t *testing.T) {
	t.Parallel()
	shared(t)
	p := storetest.NewProxy(t, sharedAddr)
	ns := storetest.Namespace()
	open(t, ns) // creates the bucket, and deletes it when the test ends
	const timeout = 300 * time.Millisecond
	b, err := New(Options{URL: "nats://" + p.Addr(), Prefix: ns, Timeout: timeout, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	storetest.RunOutage(t, p, b, timeout)
}

// TestOpenedByManyAtOnce: four nodes of a cluster start at the same
// moment on a bucket none of them finds, ten times over. Each opens the
// bucket (the losers of the create open the winner's), and what one
// writes the others read at once.
func TestOpenedByManyAtOnce(t *testing.T) {
	t.Parallel()
	url := shared(t)
	for round := range 10 {
		ns := "many" + strings.ReplaceAll(t.Name(), "/", "_") + strconv.Itoa(round) + strconv.FormatInt(time.Now().UnixNano(), 36)
		bs := make([]*Backend, 4)
		var wg sync.WaitGroup
		for i := range bs {
			wg.Go(func() {
				b, err := New(Options{URL: url, Prefix: ns, Timeout: 5 * time.Second, SweepInterval: -1})
				if err != nil {
					t.Errorf("round %d, node %d: %v", round, i, err)
					return
				}
				bs[i] = b
			})
		}
		wg.Wait()
		if t.Failed() {
			for _, b := range bs {
				if b != nil {
					_ = b.Close()
				}
			}
			return
		}
		if err := bs[0].Set("k", "v", 0); err != nil {
			t.Errorf("round %d: set: %v", round, err)
		}
		for i, b := range bs {
			if v, ok, err := b.Get("k"); err != nil || !ok || v != "v" {
				t.Errorf("round %d, node %d: get = %v, %v, %v", round, i, v, ok, err)
			}
		}
		for _, b := range bs {
			_ = b.Close()
		}
		deleteBucket(t, bs[0].bucket)
		if t.Failed() {
			return
		}
	}
}
