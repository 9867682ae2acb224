package wsconn

import (
	"errors"
	"strconv"

	"github.com/gobwas/ws"
)

// CloseError is a WebSocket close status with its reason. The parser returns
// one for every protocol violation, carrying the code the connection must
// fail with (1002, 1007, 1009); the router uses it for closes it initiates.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

// Error implements error.
func (e *CloseError) Error() string {
	return "websocket close " + strconv.Itoa(int(e.Code)) + ": " + e.Reason
}

// CloseStatus returns the close code and reason carried by err, if err is or
// wraps a *CloseError.
func CloseStatus(err error) (code ws.StatusCode, reason string, ok bool) {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason, true
	}
	return 0, "", false
}

func protocolError(reason string) *CloseError {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}

func invalidUTF8() *CloseError {
	return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in text message"}
}

// Queue errors, returned by Queue.Push.
var (
	// ErrClosed: the connection is closing; nothing more may be sent.
	ErrClosed = errors.New("closed")
	// ErrFull: the queue holds its byte limit; the slow-consumer policy
	// decides what happens next.
	ErrFull = errors.New("slow consumer")
)
