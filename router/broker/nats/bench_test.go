package nats

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moonwire/moonwire/router/broker"
)

// BenchmarkStampedAppend appends b.N stamped broadcasts to one room of a
// real JetStream (the shared server), as the storm's joins do: callers
// per node (a node runs one router lane per CPU, each waiting for its
// offset) over one or three nodes. ns/op is per broadcast.
func BenchmarkStampedAppend(b *testing.B) {
	for _, c := range []struct {
		name           string
		nodes, callers int
	}{
		{"nodes=1/callers=1", 1, 1},
		{"nodes=1/callers=8", 1, 8},
		{"nodes=3/callers=2", 3, 2},
		{"nodes=3/callers=8", 3, 8},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := broker.Options{URL: sharedURL, Prefix: prefix(), Timeout: 5 * time.Second, Outbox: 10000,
				Logger: slog.New(slog.DiscardHandler)}
			var brokers []*Broker
			for range c.nodes {
				br, err := New(opts)
				if err != nil {
					b.Skip(err)
				}
				brokers = append(brokers, br)
			}
			defer func() {
				for _, br := range brokers {
					_ = br.Close()
				}
				deleteStream(opts)
			}()
			ctx := context.Background()
			// The stream exists before the clock starts.
			if _, err := brokers[0].PublishHistory(ctx, hmsg("w", "room", "warm"), 100000, time.Minute); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			var fails atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for _, br := range brokers {
				for range c.callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							m := hmsg("n", "room", "join")
							m.Stamp = true
							if _, err := br.PublishHistory(ctx, m, 100000, time.Minute); err != nil && !errors.Is(err, broker.ErrQueued) {
								fails.Add(1)
							}
						}
					}()
				}
			}
			wg.Wait()
			// Queued ones count once stored.
			for _, br := range brokers {
				for br.h.queueLen() > 0 {
					time.Sleep(time.Millisecond)
				}
			}
			b.StopTimer()
			if n := fails.Load(); n > 0 {
				b.Fatalf("%d appends failed", n)
			}
			_, top, _, err := brokers[0].ReadHistory(ctx, "room", 0, 0)
			if err != nil || top.Offset != uint64(b.N)+1 {
				b.Fatalf("top %+v %v, want offset %s", top, err, strconv.Itoa(b.N+1))
			}
		})
	}
}

// deleteStream removes the history stream of opts on the shared server.
func deleteStream(opts broker.Options) {
	withJetStream(opts.URL, func(ctx context.Context, js jetstream.JetStream) {
		_ = js.DeleteStream(ctx, streamName(opts.Prefix))
	})
}

// BenchmarkReplayRead reads the last 20 entries of a room of 2,000, as
// chat.lua's replay to a newcomer does.
func BenchmarkReplayRead(b *testing.B) {
	opts := broker.Options{URL: sharedURL, Prefix: prefix(), Timeout: 5 * time.Second, Outbox: 10000,
		Logger: slog.New(slog.DiscardHandler)}
	br, err := New(opts)
	if err != nil {
		b.Skip(err)
	}
	defer func() { _ = br.Close(); deleteStream(opts) }()
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 250 {
				if _, err := br.PublishHistory(ctx, hmsg("n", "room", "x"), 10000, time.Minute); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, n := range []int{15, 20, 200} {
		b.Run("last="+strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				es, _, _, err := br.ReadHistory(ctx, "room", 2000-uint64(n), n)
				if err != nil || len(es) != n {
					b.Fatalf("%d entries, %v", len(es), err)
				}
			}
		})
	}
}
