package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Outbox is a bounded queue of messages with one goroutine that sends
// them, in order, in batches. A network broker puts it in front of its
// connection so that Publish never waits for the network: a lane that
// broadcasts returns at once, and when the broker cannot keep up (or is
// away) the outbox fills and further messages are dropped and counted,
// instead of the router's memory or its lanes paying for the outage.
//
// One goroutine and FIFO order mean that what one publisher sends reaches
// the broker in the order it was sent.
type Outbox struct {
	send     func([]Message) error
	q        chan Message
	maxBatch int
	dropped  atomic.Uint64
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// NewOutbox starts an outbox holding up to size messages; send is called
// from the outbox goroutine with up to maxBatch messages at a time. A send
// that fails is not retried here: the broker has counted and logged it,
// and live delivery is at most once (history is what recovers).
func NewOutbox(size, maxBatch int, send func([]Message) error) *Outbox {
	if size < 1 {
		size = 1
	}
	if maxBatch < 1 {
		maxBatch = 1
	}
	o := &Outbox{send: send, q: make(chan Message, size), maxBatch: maxBatch,
		stop: make(chan struct{}), done: make(chan struct{})}
	go o.run()
	return o
}

// Push queues m, or drops it (and reports false) when the outbox is full.
// It never blocks.
func (o *Outbox) Push(m Message) bool {
	select {
	case o.q <- m:
		return true
	default:
		o.dropped.Add(1)
		return false
	}
}

// Len returns the number of queued messages.
func (o *Outbox) Len() int { return len(o.q) }

// Dropped returns how many messages Push has refused.
func (o *Outbox) Dropped() uint64 { return o.dropped.Load() }

func (o *Outbox) run() {
	defer close(o.done)
	batch := make([]Message, 0, o.maxBatch)
	for {
		select {
		case m := <-o.q:
			batch = append(batch[:0], m)
		case <-o.stop:
			o.drain(batch[:0])
			return
		}
	fill:
		for len(batch) < o.maxBatch {
			select {
			case m := <-o.q:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		_ = o.send(batch)
		clear(batch) // let the payloads go
	}
}

// drain sends what is queued at Close.
func (o *Outbox) drain(batch []Message) {
	for {
		select {
		case m := <-o.q:
			batch = append(batch, m)
			if len(batch) == o.maxBatch {
				_ = o.send(batch)
				batch = batch[:0]
			}
		default:
			if len(batch) > 0 {
				_ = o.send(batch)
			}
			return
		}
	}
}

// Close sends what is queued, giving up after wait, and stops the
// goroutine. Push must not be called after Close.
func (o *Outbox) Close(wait time.Duration) {
	o.once.Do(func() { close(o.stop) })
	select {
	case <-o.done:
	case <-time.After(wait):
	}
}
