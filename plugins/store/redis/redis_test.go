package redis

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/storetest"
)

const (
	sharedAddr = "127.0.0.1:6379"
	sharedURL  = "redis://" + sharedAddr + "/0"
)

// shared skips the test when the machine's Redis is not running.
func shared(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", sharedAddr, 2*time.Second)
	if err != nil {
		t.Skipf("no Redis at %s (%v): start one (redis-server) to run the Redis store tests", sharedAddr, err)
	}
	_ = c.Close()
	return sharedURL
}

// open returns a backend on namespace ns that deletes the namespace's
// keys when t ends.
func open(t *testing.T, ns string) store.Backend {
	t.Helper()
	b, err := New(Options{URL: shared(t), Prefix: ns, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := b.client.Scan(ctx, 0, globEscape(ns)+":*", 1000).Iterator()
		for iter.Next(ctx) {
			b.client.Del(ctx, iter.Val())
		}
		_ = b.Close()
	})
	return b
}

func harness() storetest.Harness {
	return storetest.Harness{
		Open: open,
		// Redis expires a key once its millisecond has passed: sleeping
		// past the TTL is a bound, not a guess.
		Advance: func(t *testing.T, ns string, d time.Duration) { time.Sleep(d + 5*time.Millisecond) },
		Shared:  true,
	}
}

// TestConformance runs the suite every backend passes.
func TestConformance(t *testing.T) {
	t.Parallel()
	shared(t)
	storetest.Run(t, harness())
}

// TestNodes: three backends on one Redis are three nodes of one store.
func TestNodes(t *testing.T) {
	t.Parallel()
	shared(t)
	storetest.RunNodes(t, harness())
}

// TestLayout: keys live under PREFIX:store:, as the codec writes them,
// and the store ignores what is outside its namespace.
func TestLayout(t *testing.T) {
	t.Parallel()
	ns := storetest.Namespace()
	b := open(t, ns).(*Backend)
	other := open(t, ns+"x").(*Backend)
	if err := b.Set("k", "1", 0); err != nil {
		t.Fatal(err)
	}
	if err := other.Set("k2", 1.0, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raw, err := b.client.Get(ctx, ns+":store:k").Result()
	if err != nil || raw != "s1:1" {
		t.Fatalf("raw value = %q, %v", raw, err)
	}
	if keys, err := b.Keys(""); err != nil || len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("Keys = %q, %v: another namespace leaked in", keys, err)
	}
	// A prefix with glob characters matches itself only.
	star := open(t, ns+"*").(*Backend)
	if err := star.Set("a", 1.0, 0); err != nil {
		t.Fatal(err)
	}
	if keys, err := star.Keys(""); err != nil || len(keys) != 1 || keys[0] != "a" {
		t.Fatalf("Keys under prefix %q = %q, %v", ns+"*", keys, err)
	}
	// A value another program wrote is reported, not misread.
	b.client.Set(ctx, ns+":store:junk", "hello", 0)
	if _, _, err := b.Get("junk"); err == nil || !strings.HasPrefix(err.Error(), "store: redis: get") {
		t.Fatalf("Get of a foreign value: %v", err)
	}
	if _, err := b.Incr("junk", 1, 0); err == nil || errors.Is(err, store.ErrNotNumber) {
		t.Fatalf("Incr of a foreign value: %v", err)
	}
	// The namespace without a prefix.
	if namespace("") != "store:" || namespace("app") != "app:store:" {
		t.Fatalf("namespaces %q, %q", namespace(""), namespace("app"))
	}
}

// TestTTLExpiry: a key with a TTL expires by Redis's clock, no earlier,
// for every node (a second backend reads it).
func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	ns := storetest.Namespace()
	a, b := open(t, ns), open(t, ns)
	const ttl = 300 * time.Millisecond
	start := time.Now()
	if err := a.Set("k", "v", ttl); err != nil {
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
	// The TTL is Redis's own, and incr without one keeps it.
	if _, err := a.Incr("c", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Incr("c", 1, 0); err != nil {
		t.Fatal(err)
	}
	pttl, err := a.(*Backend).client.PTTL(context.Background(), ns+":store:c").Result()
	if err != nil || pttl < 59*time.Minute {
		t.Fatalf("PTTL after incr without a TTL = %v, %v", pttl, err)
	}
}

// TestStartErrors: New fails at once, naming the URL without its password
// and the cause, when Redis is unreachable or refuses the credentials.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	start := time.Now()
	_, err = New(Options{URL: "redis://:s3cret@" + closed, Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "redis://:xxxxx@"+closed) || strings.Contains(err.Error(), "s3cret") ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("New on a closed port: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("New on a closed port took %v", took)
	}

	shared(t)
	_, err = New(Options{URL: "redis://nobody:s3cret@" + sharedAddr, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "s3cret") ||
		!strings.Contains(err.Error(), "nobody:xxxxx@"+sharedAddr) {
		t.Fatalf("New with a wrong password: %v", err)
	}
	if _, err := New(Options{URL: "http://" + sharedAddr}); err == nil || !strings.HasPrefix(err.Error(), "store: redis: url") {
		t.Fatalf("New with a bad URL: %v", err)
	}
}

// TestOutage: when Redis goes away under a working backend, every script
// call returns nil and an error within the timeout, both when the
// connection hangs and when the port refuses.
func TestOutage(t *testing.T) {
	t.Parallel()
	shared(t)
	p := storetest.NewProxy(t, sharedAddr)
	ns := storetest.Namespace()
	const timeout = 300 * time.Millisecond
	b, err := New(Options{URL: "redis://" + p.Addr(), Prefix: ns, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	t.Cleanup(func() { // the proxy is gone; clean up directly
		c := open(t, ns)
		_ = c.Set("k", nil, 0)
	})
	storetest.RunOutage(t, p, b, timeout)
}

// TestMillis: TTLs round up to Redis's millisecond and never overflow.
func TestMillis(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   time.Duration
		want string
	}{{0, "0"}, {-1, "0"}, {1, "1"}, {time.Millisecond, "1"}, {time.Millisecond + 1, "2"}, {1<<63 - 1, "9223372036854"}} {
		if got := ttlArg(c.in); got != c.want {
			t.Errorf("ttlArg(%d) = %s, want %s", c.in, got, c.want)
		}
	}
	if globEscape(`a*?[]\b`) != `a\*\?\[\]\\b` {
		t.Errorf("globEscape = %s", globEscape(`a*?[]\b`))
	}
}

// TestAfterClose: a closed backend reports errors, it does not panic.
func TestAfterClose(t *testing.T) {
	t.Parallel()
	b, err := New(Options{URL: shared(t), Prefix: storetest.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if _, _, err := b.Get("k"); !errors.Is(err, goredis.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}
