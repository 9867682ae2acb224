// Package nats is the store backend over a NATS JetStream key/value
// bucket: moonwire nodes that point their store at one NATS server (or
// cluster) share its keys, and the atomic operations (incr, push with its
// trim, cas, and the TTLs they set) are atomic across all of them.
//
// The bucket is PREFIX_store (store without a prefix), created with a
// history of one if it does not exist; an operator may create it first with
// other limits (max bytes, replicas), which then govern. A user key is
// stored under "k" plus its base64url form, because a KV key allows only a
// few characters; a key too long for a subject is stored under "h" plus the
// base64url of its SHA-256, and the envelope then carries the key itself.
//
// Atomicity comes from JetStream's per-subject revision: Incr, Push,
// CompareAndSet and Delete read the entry, compute, and write with
// kv.Create / kv.Update / a delete expecting the revision they read. If
// another node wrote in between, the write is refused and the operation
// starts again from a fresh read, with a growing, jittered pause, up to
// maxAttempts times and within the timeout; past either it fails with an
// error rather than write over a value it did not see. Under heavy
// contention on one key a call therefore costs several round trips.
//
// TTLs: the servers this must run on (nats-server 2.9) have no per-key
// TTL, so the expiry is part of the stored envelope, as unix nanoseconds
// by the clock of the node that wrote it, and an entry past it is treated
// as absent by every operation. The consequences, documented for
// operators: expiry is only as exact as the nodes' clocks agree (run NTP;
// a node whose clock is ahead sees keys expire early); an expired entry
// keeps its storage until a reader meets it (Get and Delete purge it) or
// the janitor, which every SweepInterval reads the whole bucket and purges
// expired entries and the markers deletes leave; and Keys reads every
// value, not only names, to know which are live.
//
// What else differs from the memory backend: MaxKeys and MaxBytes do not
// apply (the bucket's own limits govern); a value must also fit the
// server's max_payload (1 MiB by default: raise it along with MaxValueBytes),
// or it fails as too large; Keys is bounded by store.MaxListKeys and the
// timeout; and every call can fail for a network reason, reported as an
// error and never waiting longer than Options.Timeout. While the
// connection is down, calls fail at once instead of queueing.
//
// It knows NATS, the store's Backend contract and the codec; nothing of
// Lua, the router or configuration files.
package nats

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/internal/jsread"
	redactpkg "github.com/moonwire/moonwire/internal/redact"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/plugins/store/internal/codec"
)

// Defaults and tuning that is not worth a configuration key.
const (
	// DefaultTimeout bounds a call when Options.Timeout is zero. A store
	// call holds up the Lua callback that made it, so it is short.
	DefaultTimeout = 2 * time.Second
	// DefaultSweepInterval is how often the janitor runs when
	// Options.SweepInterval is zero.
	DefaultSweepInterval = time.Minute
	// maxAttempts bounds the read-compute-write rounds of one atomic
	// operation that keep losing to concurrent writers.
	maxAttempts = 100
	// maxPlainKey is the longest user key stored under its own base64
	// form (936 characters); a longer one is hashed, so that the subject
	// stays well under the server's 4 KB protocol line.
	maxPlainKey = 700
	// payloadHeadroom is what a write's headers may take of max_payload.
	payloadHeadroom = 1024
)

// Options configure a Backend.
type Options struct {
	// URL is the NATS server to use, nats://[user:password@]host:port; a
	// comma-separated list names several servers of one cluster.
	URL string
	// Prefix names the bucket: PREFIX_store (store without a prefix). It
	// may hold letters, digits, - and _. Nodes that share a store share
	// it.
	Prefix string
	// Timeout bounds every call, retries included; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// SweepInterval is how often the janitor purges expired entries and
	// delete markers; zero means DefaultSweepInterval, negative disables
	// it (entries are then purged only when read).
	SweepInterval time.Duration
}

// Backend is a store.Backend over a JetStream KV bucket. It is safe for
// concurrent use.
type Backend struct {
	url      string // Options.URL without secrets, for errors
	bucket   string
	subject  string // the bucket's subject prefix, $KV.BUCKET.
	timeout  time.Duration
	nc       *natsgo.Conn
	kv       jetstream.KeyValue
	stream   jetstream.Stream
	maxValue atomic.Int64 // MaxValueBytes

	// writers serialise this node's read-compute-write rounds per key
	// (striped): two callbacks of one node incrementing one counter would
	// only lose to each other at the server, so that only other nodes
	// race for a key's revision.
	seed    maphash.Seed
	writers [keyStripes]sync.Mutex

	stop, done chan struct{} // janitor; nil when disabled
	once       sync.Once
}

// keyStripes is the number of locks update spreads keys over.
const keyStripes = 256

var _ store.Backend = (*Backend)(nil)

var validBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// New connects to opts.URL and opens the bucket, creating it if it does
// not exist. It fails, naming the URL without secrets and the cause, when
// the server cannot be reached, JetStream is not enabled, or the bucket
// can be neither opened nor created.
func New(opts Options) (*Backend, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	bucket := "store"
	if opts.Prefix != "" {
		bucket = opts.Prefix + "_store"
	}
	if !validBucket.MatchString(opts.Prefix + "x") {
		return nil, fmt.Errorf("store: nats: prefix %q: a bucket name allows letters, digits, - and _ only", opts.Prefix)
	}
	b := &Backend{
		seed:    maphash.MakeSeed(),
		url:     redact(opts.URL),
		bucket:  bucket,
		subject: "$KV." + bucket + ".",
		timeout: opts.Timeout,
	}
	b.SetLimits(store.Options{})
	nc, err := natsgo.Connect(opts.URL,
		natsgo.Name("moonwire-store"),
		natsgo.Timeout(opts.Timeout),
		// Keep trying forever after a disconnect, but fail calls at once
		// meanwhile rather than buffer them: a buffered write would be
		// made later, after the script was told it failed.
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectBufSize(-1),
		// nats.go writes asynchronous errors (a connection that broke, a
		// slow watcher) to stderr by default; each one also fails the call
		// it concerns, which is where it is reported.
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			slog.Debug("nats store: asynchronous error", "url", redact(opts.URL), "err", err)
		}),
		natsgo.NoCallbacksAfterClientClose(),
	)
	if err != nil {
		return nil, fmt.Errorf("store: nats: connect %s: %w", b.url, err)
	}
	b.nc = nc
	if err := b.open(); err != nil {
		nc.Close()
		return nil, err
	}
	if opts.SweepInterval > 0 {
		b.stop, b.done = make(chan struct{}), make(chan struct{})
		go b.janitor(opts.SweepInterval)
	}
	return b, nil
}

// open opens or creates the bucket. Two nodes starting together may both
// find it missing: the loser of the creation opens the winner's.
func (b *Backend) open() error {
	ctx, cancel := b.ctx()
	defer cancel()
	js, err := jetstream.New(b.nc)
	if err != nil {
		return fmt.Errorf("store: nats: %s: %w", b.url, err)
	}
	kv, err := js.KeyValue(ctx, b.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      b.bucket,
			Description: "moonwire store",
			History:     1,
		})
		if err != nil {
			kv, err = js.KeyValue(ctx, b.bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("store: nats: %s: bucket %s: %w", b.url, b.bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+b.bucket)
	if err != nil {
		return fmt.Errorf("store: nats: %s: bucket %s: %w", b.url, b.bucket, err)
	}
	b.kv, b.stream = kv, st
	return nil
}

func (b *Backend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.timeout)
}

// fail wraps a NATS error with what was being done; the text is what a
// script sees.
func (b *Backend) fail(op string, err error) error {
	return fmt.Errorf("store: nats: %s: %w", op, err)
}

// SetLimits implements store.Backend: only MaxValueBytes applies here.
func (b *Backend) SetLimits(opts store.Options) { b.maxValue.Store(int64(store.ValueLimit(opts))) }

func (b *Backend) tooLarge(key string, v any) bool {
	return int64(len(key)+store.Size(v)) > b.maxValue.Load()
}

// kvKey is the bucket key of a user key.
func kvKey(key string) string {
	if len(key) <= maxPlainKey {
		return "k" + base64.RawURLEncoding.EncodeToString([]byte(key))
	}
	sum := sha256.Sum256([]byte(key))
	return "h" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// hashed reports whether kvKey hashes key, so that the envelope must
// carry it.
func hashed(key string) bool { return len(key) > maxPlainKey }

// envelope is what the bucket holds under a key:
//
//	e EXPIRY ; [k LEN : KEY] VALUE
//
// EXPIRY is unix nanoseconds (0: none); KEY is present for a hashed key;
// VALUE is the codec's form.
type envelope struct {
	v       any
	expires int64
	key     string
	hasKey  bool
}

func (b *Backend) encode(key string, v any, expires int64) ([]byte, error) {
	dst := append(make([]byte, 0, 64), 'e')
	dst = strconv.AppendInt(dst, expires, 10)
	dst = append(dst, ';')
	if hashed(key) {
		dst = append(dst, 'k')
		dst = strconv.AppendInt(dst, int64(len(key)), 10)
		dst = append(dst, ':')
		dst = append(dst, key...)
	}
	dst, _, err := codec.Append(dst, v)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// The server refuses a message over max_payload; to a script that is
	// a value too large for this store, like MaxValueBytes.
	if mp := b.nc.MaxPayload(); mp > 0 && int64(len(dst))+payloadHeadroom > mp {
		return nil, store.ErrValueTooLarge
	}
	return dst, nil
}

func decodeEnvelope(data []byte) (envelope, error) {
	var e envelope
	rest, ok := strings.CutPrefix(string(data), "e")
	exp, rest, ok2 := strings.Cut(rest, ";")
	if !ok || !ok2 {
		return e, fmt.Errorf("%w: no envelope", codec.ErrCorrupt)
	}
	var err error
	if e.expires, err = strconv.ParseInt(exp, 10, 64); err != nil {
		return e, fmt.Errorf("%w: expiry %q", codec.ErrCorrupt, exp)
	}
	if body, ok := strings.CutPrefix(rest, "k"); ok {
		n, after, ok := strings.Cut(body, ":")
		l, err := strconv.Atoi(n)
		if !ok || err != nil || l < 0 || l > len(after) {
			return e, fmt.Errorf("%w: key", codec.ErrCorrupt)
		}
		e.key, e.hasKey, rest = after[:l], true, after[l:]
	}
	e.v, err = codec.Decode([]byte(rest))
	return e, err
}

// deadline is the expiry of a TTL from now, in unix nanoseconds; 0 for
// none. A TTL too long for the clock is as good as none, but is kept as
// the latest time there is.
func deadline(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	now := time.Now().UnixNano()
	if int64(ttl) > math.MaxInt64-now {
		return math.MaxInt64
	}
	return now + int64(ttl)
}

func expired(expires int64, now int64) bool { return expires != 0 && now >= expires }

// current is what a key holds, as read.
type current struct {
	rev     uint64 // the latest entry's revision, live or expired; 0: none
	live    bool
	v       any
	expires int64
}

func (b *Backend) read(ctx context.Context, k, key string) (current, error) {
	// A direct get: asked again when it gets no answer, as nats-server 2.9
	// may lose the first one of a stream (a bucket is one) another node
	// has just created.
	e, err := jsread.Do(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return b.kv.Get(ctx, k) })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return current{}, nil
	}
	if err != nil {
		return current{}, err
	}
	env, err := decodeEnvelope(e.Value())
	if err != nil {
		return current{}, fmt.Errorf("key %q: %w", key, err)
	}
	if env.hasKey && env.key != key {
		return current{}, fmt.Errorf("key %q: its hash holds key %q", key, env.key)
	}
	return current{
		rev:     e.Revision(),
		live:    !expired(env.expires, time.Now().UnixNano()),
		v:       env.v,
		expires: env.expires,
	}, nil
}

// purge removes the entries of k up to revision rev, and no later one: an
// expired entry or a delete marker, without disturbing a write that came
// after it. It leaves no marker behind.
func (b *Backend) purge(ctx context.Context, k string, rev uint64) error {
	return b.stream.Purge(ctx, jetstream.WithPurgeSubject(b.subject+k), jetstream.WithPurgeSequence(rev+1))
}

// action is what an atomic operation decided, given what it read.
type action int

const (
	keep   action = iota // write nothing
	put                  // write the data, expecting the revision read
	remove               // delete, expecting the revision read
)

// update runs decide on key's current state and applies its decision,
// expecting the revision it read; when another write came between, it
// reads again and asks decide again. decide must set its results afresh
// on every call.
func (b *Backend) update(op, key string, decide func(c current) (action, []byte, error)) error {
	ctx, cancel := b.ctx()
	defer cancel()
	mu := &b.writers[maphash.String(b.seed, key)%keyStripes]
	mu.Lock()
	defer mu.Unlock()
	k := kvKey(key)
	for attempt := 1; ; attempt++ {
		c, err := b.read(ctx, k, key)
		if err != nil {
			return b.fail(op, err)
		}
		act, data, err := decide(c)
		if err != nil {
			return err
		}
		switch {
		case act == put && c.rev == 0:
			_, err = b.kv.Create(ctx, k, data)
		case act == put:
			_, err = b.kv.Update(ctx, k, data, c.rev)
		case act == remove && c.rev != 0:
			err = b.kv.Delete(ctx, k, jetstream.LastRevision(c.rev))
		}
		if err == nil {
			return nil
		}
		if !conflict(err) {
			return b.fail(op, err)
		}
		if attempt == maxAttempts {
			return b.fail(op, fmt.Errorf("lost to concurrent writes %d times", maxAttempts))
		}
		// Back off so that contending nodes spread out: up to 1 ms, 2 ms,
		// ... 32 ms, with jitter.
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5)))
		select {
		case <-ctx.Done():
			return b.fail(op, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// conflict reports whether err says the key's revision was not the one
// expected: someone else wrote first.
func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Get implements store.Backend. An expired entry it meets is purged.
func (b *Backend) Get(key string) (any, bool, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	k := kvKey(key)
	c, err := b.read(ctx, k, key)
	if err != nil {
		return nil, false, b.fail("get", err)
	}
	if !c.live {
		if c.rev != 0 {
			_ = b.purge(ctx, k, c.rev) // best effort: the janitor does it otherwise
		}
		return nil, false, nil
	}
	return c.v, true, nil
}

// Set implements store.Backend. It writes whatever the key held: a plain
// put is atomic by itself.
func (b *Backend) Set(key string, v any, ttl time.Duration) error {
	if v == nil {
		_, err := b.Delete(key)
		return err
	}
	if b.tooLarge(key, v) {
		return store.ErrValueTooLarge
	}
	data, err := b.encode(key, v, deadline(ttl))
	if err != nil {
		return err
	}
	ctx, cancel := b.ctx()
	defer cancel()
	if _, err := b.kv.Put(ctx, kvKey(key), data); err != nil {
		return b.fail("set", err)
	}
	return nil
}

// Incr implements store.Backend.
func (b *Backend) Incr(key string, n float64, ttl time.Duration) (float64, error) {
	if b.tooLarge(key, n) {
		return 0, store.ErrValueTooLarge
	}
	var result float64
	err := b.update("incr", key, func(c current) (action, []byte, error) {
		cur, expires := 0.0, int64(0)
		if c.live {
			f, ok := c.v.(float64)
			if !ok {
				return keep, nil, store.NotNumberError(key, c.v)
			}
			cur, expires = f, c.expires
		}
		if ttl > 0 {
			expires = deadline(ttl)
		}
		result = cur + n
		data, err := b.encode(key, result, expires)
		return put, data, err
	})
	return result, err
}

// Push implements store.Backend.
func (b *Backend) Push(key string, v any, limit int, ttl time.Duration) (int, error) {
	limit = min(store.MaxPushLength, max(1, limit))
	var length int
	err := b.update("push", key, func(c current) (action, []byte, error) {
		var cur []any
		expires := int64(0)
		if c.live {
			l, ok := c.v.([]any)
			if !ok {
				return keep, nil, store.NotListError(key, c.v)
			}
			cur, expires = l, c.expires
		}
		tail := cur[max(0, len(cur)+1-limit):]
		list := make([]any, 0, len(tail)+1)
		list = append(append(list, tail...), v)
		if b.tooLarge(key, list) {
			return keep, nil, store.ErrValueTooLarge
		}
		if ttl > 0 {
			expires = deadline(ttl)
		}
		length = len(list)
		data, err := b.encode(key, list, expires)
		return put, data, err
	})
	return length, err
}

// CompareAndSet implements store.Backend.
func (b *Backend) CompareAndSet(key string, old, v any, ttl time.Duration) (bool, error) {
	if err := store.CheckComparable(old); err != nil {
		return false, err
	}
	if v != nil && b.tooLarge(key, v) {
		return false, store.ErrValueTooLarge
	}
	var swapped bool
	err := b.update("cas", key, func(c current) (action, []byte, error) {
		swapped = c.live == (old != nil) && (!c.live || store.Equal(c.v, old))
		switch {
		case !swapped:
			return keep, nil, nil
		case v == nil:
			return remove, nil, nil
		}
		data, err := b.encode(key, v, deadline(ttl))
		return put, data, err
	})
	return swapped && err == nil, err
}

// Delete implements store.Backend. It deletes an expired entry too, but
// reports only a live one.
func (b *Backend) Delete(key string) (bool, error) {
	var existed bool
	err := b.update("delete", key, func(c current) (action, []byte, error) {
		existed = c.live
		return remove, nil, nil
	})
	return existed && err == nil, err
}

// Keys implements store.Backend. It reads every entry of the bucket, values
// included (the expiry is in the value), so it is for occasional listings;
// it fails with store.ErrTooManyToList past store.MaxListKeys keys and with
// the timeout on a bucket too large to read in it.
func (b *Backend) Keys(prefix string) ([]string, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	var keys []string
	now := time.Now().UnixNano()
	err := b.scan(ctx, func(e jetstream.KeyValueEntry) error {
		env, err := decodeEnvelope(e.Value())
		if err != nil {
			return fmt.Errorf("bucket key %q: %w", e.Key(), err)
		}
		if expired(env.expires, now) {
			return nil
		}
		key := env.key
		if !env.hasKey {
			raw, ok := strings.CutPrefix(e.Key(), "k")
			dec, err := base64.RawURLEncoding.DecodeString(raw)
			if !ok || err != nil {
				return nil // not a key this package wrote
			}
			key = string(dec)
		}
		if strings.HasPrefix(key, prefix) {
			if keys = append(keys, key); len(keys) > store.MaxListKeys {
				return store.ErrTooManyToList
			}
		}
		return nil
	}, jetstream.IgnoreDeletes())
	if errors.Is(err, store.ErrTooManyToList) {
		return nil, err
	}
	if err != nil {
		return nil, b.fail("keys", err)
	}
	slices.Sort(keys)
	return keys, nil
}

// scan calls fn for the latest entry of every key in the bucket.
func (b *Backend) scan(ctx context.Context, fn func(jetstream.KeyValueEntry) error, opts ...jetstream.WatchOpt) error {
	w, err := b.kv.WatchAll(ctx, opts...)
	if err != nil {
		return err
	}
	defer stopWatcher(w)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil { // every key delivered
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// stopWatcher stops w and drains what it still delivers: its callback
// blocks on a full channel, so a watcher abandoned mid-scan would hold a
// goroutine (and its subscription's lock) forever. The channel closes once
// the subscription has.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		timeout := time.After(time.Minute)
		for {
			select {
			case _, ok := <-w.Updates():
				if !ok {
					return
				}
			case <-timeout:
				return
			}
		}
	}()
}

// Sweep purges the entries that have expired and the markers deletes
// left, and returns how many it purged. The janitor calls it every
// SweepInterval; every node's janitor does, which is harmless, since a
// purge removes only what it saw.
func (b *Backend) Sweep() (int, error) {
	// A sweep reads the whole bucket: it gets more time than one call.
	ctx, cancel := context.WithTimeout(context.Background(), 10*b.timeout)
	defer cancel()
	var stale []jetstream.KeyValueEntry
	now := time.Now().UnixNano()
	err := b.scan(ctx, func(e jetstream.KeyValueEntry) error {
		if e.Operation() != jetstream.KeyValuePut {
			stale = append(stale, e)
		} else if env, err := decodeEnvelope(e.Value()); err == nil && expired(env.expires, now) {
			stale = append(stale, e)
		}
		return nil
	})
	n := 0
	for _, e := range stale {
		if err != nil {
			break
		}
		if err = b.purge(ctx, e.Key(), e.Revision()); err == nil {
			n++
		}
	}
	if err != nil {
		return n, b.fail("sweep", err)
	}
	return n, nil
}

func (b *Backend) janitor(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_, _ = b.Sweep() // an outage now is one the next sweep may not meet
		}
	}
}

// Close implements store.Backend: it stops the janitor and closes the
// connection. It is idempotent.
func (b *Backend) Close() error {
	b.once.Do(func() {
		if b.stop != nil {
			close(b.stop)
			<-b.done
		}
		b.nc.Close()
	})
	return nil
}

// redact hides the credentials of a server URL for messages and logs.
func redact(raw string) string { return redactpkg.URLs(raw, "nats", true) }
