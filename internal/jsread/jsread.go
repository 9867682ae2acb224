// Package jsread asks a JetStream read again when it gets no answer.
//
// nats-server 2.9 sometimes leaves a direct get unanswered: the first
// direct get of a stream created a moment before, by another connection,
// can be lost (about 1% of them, in a test of three connections), and the
// caller would wait out its whole deadline (the broker's or store's
// timeout, seconds) for an answer that never comes, while asking again is
// answered at once. A key-value bucket is a stream read the same way. A
// read is safe to repeat, so Do gives each try a short bound and tries
// again, doubling the bound, until the caller's context ends.
//
// It knows contexts and the NATS client's timeout error only: nothing of
// brokers, stores or what is read.
package jsread

import (
	"context"
	"errors"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// FirstTry bounds the first try. A direct get is answered in well under a
// millisecond on an idle server; on a loaded one a try that outlives this
// is asked again, which costs the server one more read. Each try after
// the first has twice its predecessor's bound, so a slow server is asked
// at most a handful of times in a caller's deadline.
const FirstTry = 500 * time.Millisecond

// minTry: a try is never given less than this while the caller has more
// left; the last try is given all that is left.
const minTry = FirstTry / 10

// Do calls read until it returns something other than a timeout of its
// own try, or ctx ends; it returns read's last results. A try takes at
// most half of the time ctx has left, so that a caller with a short
// deadline (a script's read waits 500 ms) still has time to ask again.
// A ctx without a deadline gets one try, as it would without Do (nats.go
// gives such a call its own timeout): tries without end are not asked for.
func Do[T any](ctx context.Context, read func(context.Context) (T, error)) (T, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return read(ctx)
	}
	for bound := FirstTry; ; bound *= 2 {
		left := time.Until(dl)
		b := min(bound, left/2)
		if left/2 < minTry {
			b = left
		}
		try, cancel := context.WithTimeout(ctx, b)
		v, err := read(try)
		cancel()
		if err == nil || ctx.Err() != nil || !timedOut(err) {
			return v, err
		}
	}
}

func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, natsgo.ErrTimeout)
}
