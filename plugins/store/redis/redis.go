// Package redis is the store backend over Redis: moonwire nodes that point
// their store at one Redis share its keys, and the atomic operations
// (incr, push with its trim, cas, and the TTLs they set) are atomic across
// all of them.
//
// A user key k lives under PREFIX:store:k as a Redis string holding the
// value in the codec's tagged form (plugins/store/internal/codec), so that
// a value reads back with exactly its type. Set, Get and Delete are plain
// commands; Incr, Push and CompareAndSet are Lua scripts (EVALSHA, EVAL
// when Redis does not have the script yet), which Redis runs without any
// other command in between: read, check, write and expiry are one step. TTLs
// are Redis's own (PX), so a key expires on every node at once, by the
// server's clock.
//
// What differs from the memory backend: MaxKeys and MaxBytes do not apply
// (Redis's maxmemory and its eviction policy govern; with an evicting
// policy Redis may drop keys the store would have kept), Keys walks the
// keyspace with SCAN and is bounded by store.MaxListKeys and the timeout,
// and every call can fail for a network reason, reported as an error and
// never waiting longer than Options.Timeout. A single Redis (or a
// primary behind a proxy) is expected, not a Redis Cluster.
//
// It knows Redis, the store's Backend contract and the codec; nothing of
// Lua, the router or configuration files.
package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	redactpkg "github.com/moonwire/moonwire/internal/redact"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/codec"
)

// DefaultTimeout bounds a call when Options.Timeout is zero. A store call
// holds up the Lua callback that made it, so the bound is short.
const DefaultTimeout = 2 * time.Second

// scanCount is the COUNT hint of each SCAN: keys Redis looks at per call.
const scanCount = 1000

// Options configure a Backend.
type Options struct {
	// URL is the Redis to use: redis://[user:password@]host:port[/db],
	// or rediss:// for TLS.
	URL string
	// Prefix namespaces the store's keys: user key k is PREFIX:store:k
	// (store:k without a prefix). Nodes that share a store share it.
	Prefix string
	// Timeout bounds every call, connection included; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// Backend is a store.Backend over Redis. It is safe for concurrent use.
type Backend struct {
	url      string // Options.URL without its password, for errors
	ns       string // PREFIX:store:
	timeout  time.Duration
	client   *goredis.Client
	maxValue atomic.Int64 // MaxValueBytes

	closeOnce sync.Once
	closeErr  error
}

var _ store.Backend = (*Backend)(nil)

// New connects to the Redis at opts.URL and checks with a PING that it
// answers and accepts the credentials, so that a wrong address or password
// is an error at start that names the cause, not a failure of the first
// script. Errors name the URL without its password.
func New(opts Options) (*Backend, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	ro, err := goredis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("store: redis: url %s: %w", redact(opts.URL), err)
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = opts.Timeout, opts.Timeout, opts.Timeout
	ro.PoolTimeout = opts.Timeout
	// A refused connection is an outage to report now, not to retry
	// five times within the call.
	ro.DialerRetries = 1
	ro.ContextTimeoutEnabled = true
	ro.ClientName = "moonwire-store"
	// One attempt per command: a script whose reply was lost may have run,
	// and running incr or push again would count or append twice.
	ro.MaxRetries = -1
	b := &Backend{
		url:     redact(opts.URL),
		ns:      namespace(opts.Prefix),
		timeout: opts.Timeout,
		client:  goredis.NewClient(ro),
	}
	b.SetLimits(store.Options{})
	ctx, cancel := b.ctx()
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		_ = b.client.Close()
		return nil, fmt.Errorf("store: redis: connect %s: %w", b.url, err)
	}
	return b, nil
}

// namespace is the prefix of every Redis key the store uses.
func namespace(prefix string) string {
	if prefix == "" {
		return "store:"
	}
	return prefix + ":store:"
}

func (b *Backend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.timeout)
}

// fail wraps a Redis error with what was being done; the text is what a
// script sees.
func (b *Backend) fail(op string, err error) error {
	return fmt.Errorf("store: redis: %s: %w", op, err)
}

// SetLimits implements store.Backend: only MaxValueBytes applies here.
func (b *Backend) SetLimits(opts store.Options) { b.maxValue.Store(int64(store.ValueLimit(opts))) }

func (b *Backend) tooLarge(key string, v any) bool {
	return int64(len(key)+store.Size(v)) > b.maxValue.Load()
}

// Get implements store.Backend.
func (b *Backend) Get(key string) (any, bool, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	raw, err := b.client.Get(ctx, b.ns+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, b.fail("get", err)
	}
	v, err := codec.Decode(raw)
	if err != nil {
		return nil, false, b.fail("get "+strconv.Quote(key), err)
	}
	return v, true, nil
}

// Set implements store.Backend.
func (b *Backend) Set(key string, v any, ttl time.Duration) error {
	if v == nil {
		_, err := b.Delete(key)
		return err
	}
	if b.tooLarge(key, v) {
		return store.ErrValueTooLarge
	}
	data, err := codec.Encode(v)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	ctx, cancel := b.ctx()
	defer cancel()
	// Without a TTL, SET removes any the key had, as the contract says.
	if err := b.client.Set(ctx, b.ns+key, data, millis(ttl)).Err(); err != nil {
		return b.fail("set", err)
	}
	return nil
}

// Incr implements store.Backend.
func (b *Backend) Incr(key string, n float64, ttl time.Duration) (float64, error) {
	if b.tooLarge(key, n) {
		return 0, store.ErrValueTooLarge
	}
	ctx, cancel := b.ctx()
	defer cancel()
	res, err := incrScript.Run(ctx, b.client, []string{b.ns + key}, codec.FormatNumber(n), ttlArg(ttl)).StringSlice()
	if err != nil {
		return 0, b.fail("incr", err)
	}
	switch {
	case len(res) == 2 && res[0] == "ok":
		v, err := codec.Decode([]byte(res[1]))
		f, isNum := v.(float64)
		if err != nil || !isNum {
			return 0, b.fail("incr", fmt.Errorf("%w: %q", codec.ErrCorrupt, res[1]))
		}
		return f, nil
	case len(res) == 2 && res[0] == "type" && res[1] != "":
		if found, ok := codec.Sample(res[1][0]); ok {
			return 0, store.NotNumberError(key, found)
		}
	}
	return 0, b.fail("incr "+strconv.Quote(key), fmt.Errorf("%w: %q", codec.ErrCorrupt, res))
}

// Push implements store.Backend.
func (b *Backend) Push(key string, v any, limit int, ttl time.Duration) (int, error) {
	limit = min(store.MaxPushLength, max(1, limit))
	elem, size, err := codec.Append(nil, v)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	room := b.maxValue.Load() - int64(len(key))
	ctx, cancel := b.ctx()
	defer cancel()
	res, err := pushScript.Run(ctx, b.client, []string{b.ns + key}, elem, size, limit, ttlArg(ttl), room).StringSlice()
	if err != nil {
		return 0, b.fail("push", err)
	}
	switch {
	case len(res) == 2 && res[0] == "ok":
		if n, err := strconv.Atoi(res[1]); err == nil {
			return n, nil
		}
	case len(res) == 2 && res[0] == "type" && res[1] != "":
		if found, ok := codec.Sample(res[1][0]); ok {
			return 0, store.NotListError(key, found)
		}
	case len(res) == 1 && res[0] == "toolarge":
		return 0, store.ErrValueTooLarge
	}
	return 0, b.fail("push "+strconv.Quote(key), fmt.Errorf("%w: %q", codec.ErrCorrupt, res))
}

// CompareAndSet implements store.Backend.
func (b *Backend) CompareAndSet(key string, old, v any, ttl time.Duration) (bool, error) {
	if err := store.CheckComparable(old); err != nil {
		return false, err
	}
	if v != nil && b.tooLarge(key, v) {
		return false, store.ErrValueTooLarge
	}
	// The script compares numbers as numbers, since it may itself have
	// written one with another text (incr prints "%.17g"), and anything
	// else byte for byte, which is exact because the codec writes one
	// text per string and boolean.
	kind, operand := "z", ""
	switch o := old.(type) {
	case float64:
		kind, operand = "n", codec.FormatNumber(o)
	case string, bool:
		enc, _ := codec.Encode(o)
		kind, operand = "e", string(enc)
	}
	var data []byte // empty: delete
	if v != nil {
		var err error
		if data, err = codec.Encode(v); err != nil {
			return false, fmt.Errorf("store: %w", err)
		}
	}
	ctx, cancel := b.ctx()
	defer cancel()
	res, err := casScript.Run(ctx, b.client, []string{b.ns + key}, kind, operand, data, ttlArg(ttl)).Text()
	if err != nil {
		return false, b.fail("cas", err)
	}
	return res == "1", nil
}

// Delete implements store.Backend.
func (b *Backend) Delete(key string) (bool, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	n, err := b.client.Del(ctx, b.ns+key).Result()
	if err != nil {
		return false, b.fail("delete", err)
	}
	return n > 0, nil
}

// Keys implements store.Backend. It walks the whole keyspace with SCAN
// (Redis filters by the pattern, but still looks at every key of the
// database), so it is for occasional listings; it fails with
// store.ErrTooManyToList past store.MaxListKeys keys and with the timeout
// on a keyspace too large to walk in it.
func (b *Backend) Keys(prefix string) ([]string, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	match := globEscape(b.ns+prefix) + "*"
	seen := make(map[string]struct{})
	var cursor uint64
	for {
		page, next, err := b.client.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return nil, b.fail("keys", err)
		}
		for _, k := range page {
			// SCAN may return a key twice; the map keeps one.
			if k, ok := strings.CutPrefix(k, b.ns); ok && strings.HasPrefix(k, prefix) {
				seen[k] = struct{}{}
			}
		}
		if len(seen) > store.MaxListKeys {
			return nil, store.ErrTooManyToList
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// Close implements store.Backend: it closes the connection pool. It is
// idempotent; calls made after it fail.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.client.Close() })
	return b.closeErr
}

// globEscape quotes the characters SCAN's MATCH gives a meaning to, so
// that a prefix is matched as it is written: a user key may hold any byte.
func globEscape(s string) string {
	var sb strings.Builder
	for i := range len(s) {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

// millis rounds a positive TTL up to Redis's millisecond, so that a TTL
// shorter than a millisecond still expires rather than being refused; 0
// stays 0 (no expiry).
func millis(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return 0
	}
	if ttl > math.MaxInt64-time.Millisecond {
		return ttl.Truncate(time.Millisecond)
	}
	return (ttl + time.Millisecond - 1).Truncate(time.Millisecond)
}

// ttlArg is a TTL as the scripts read it: milliseconds, "0" for none.
func ttlArg(ttl time.Duration) string {
	return strconv.FormatInt(millis(ttl).Milliseconds(), 10)
}

// redact hides the credentials of a server URL for messages and logs.
func redact(raw string) string { return redactpkg.URLs(raw, "", false) }
