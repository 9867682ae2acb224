package jsread

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// A try that is never answered is asked again; the answer of a later try
// is returned.
func TestDoAsksAgainAfterNoAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := 0
	v, err := Do(ctx, func(try context.Context) (string, error) {
		calls++
		switch calls {
		case 1:
			<-try.Done() // the lost request: nothing comes before the try's end
			return "", try.Err()
		case 2:
			return "", fmt.Errorf("get: %w", natsgo.ErrTimeout) // the client's own timeout
		}
		return "answer", nil
	})
	if v != "answer" || err != nil || calls != 3 {
		t.Fatalf("got %q, %v after %d calls; want the third call's answer", v, err, calls)
	}
}

// A caller with a short deadline gets two tries: the first takes half of
// its time, not all of it.
func TestDoSplitsAShortDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), FirstTry/2)
	defer cancel()
	calls := 0
	v, err := Do(ctx, func(try context.Context) (int, error) {
		calls++
		if calls == 1 {
			<-try.Done()
			return 0, try.Err()
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 2 {
		t.Fatalf("got %d, %v after %d calls; want the second call's 7", v, err, calls)
	}
}

// A caller without a deadline gets one try, with its own context: it is
// not asked again without end.
func TestDoWithoutDeadlineTriesOnce(t *testing.T) {
	calls := 0
	_, err := Do(context.Background(), func(try context.Context) (int, error) {
		calls++
		if _, ok := try.Deadline(); ok {
			t.Error("the try got a deadline its caller did not set")
		}
		return 0, natsgo.ErrTimeout
	})
	if !errors.Is(err, natsgo.ErrTimeout) || calls != 1 {
		t.Fatalf("err %v after %d calls; want the timeout after 1", err, calls)
	}
}

// Another error is returned at once: only silence is retried.
func TestDoReturnsOtherErrors(t *testing.T) {
	bad := errors.New("message not found")
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Do(ctx, func(context.Context) (int, error) {
		calls++
		return 0, bad
	})
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("err %v after %d calls; want %v after 1", err, calls, bad)
	}
}

// The caller's deadline ends the tries: the last try's timeout comes back.
func TestDoStopsAtTheCallersDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), minTry)
	defer cancel()
	calls := 0
	_, err := Do(ctx, func(try context.Context) (int, error) {
		calls++
		<-try.Done()
		return 0, try.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || calls != 1 {
		t.Fatalf("err %v after %d calls; want the deadline after 1", err, calls)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = Do(ctx, func(try context.Context) (int, error) { return 0, try.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err %v", err)
	}
}
