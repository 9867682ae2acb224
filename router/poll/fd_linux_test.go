//go:build linux

package poll

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// inode returns the inode of what fd refers to, or 0 if fd is not open.
func inode(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}

// TestOwnLeavesNet: the owned socket works through the FD, net's
// connection is closed, and closing the FD closes the socket.
func TestOwnLeavesNet(t *testing.T) {
	c, s := tcptest.Pair(t)
	fd := new(FD)
	if !fd.Own(s) {
		t.Fatal("a TCP connection was not taken")
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("net's connection still writes: %v", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	var n int
	var rerr error
	read := func(f uintptr) bool { n, rerr = unix.Read(int(f), buf); return rerr != unix.EAGAIN }
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := fd.Read(read); err == nil {
			break
		} else if !errors.Is(err, ErrWouldBlock) || time.Now().After(deadline) {
			t.Fatalf("read: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	if rerr != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], rerr)
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("the peer read %v, want EOF once the FD closed", err)
	}
	if new(FD).Own(nil) {
		t.Fatal("took a socket from no connection")
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if new(FD).Own(p) {
		t.Fatal("took a socket from a pipe")
	}
}

// TestFDCloseWaitsForRunningCalls: Close during a call closes the
// descriptor when the call returns, never under it; calls after Close do
// not run; a second Close closes nothing (the number may be another
// file's by then).
func TestFDCloseWaitsForRunningCalls(t *testing.T) {
	_, s := tcptest.Pair(t)
	fd := own(t, s)
	num := fd.fd
	ino := inode(num)
	err := fd.Control(func(f uintptr) {
		if err := fd.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if inode(int(f)) != ino {
			t.Error("closed under a running call")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if inode(num) == ino {
		t.Fatal("not closed when the call returned")
	}
	ran := false
	if err := fd.Control(func(uintptr) { ran = true }); !errors.Is(err, net.ErrClosed) || ran {
		t.Fatalf("Control after Close: %v, ran %v", err, ran)
	}
	if err := fd.Write(func(uintptr) bool { ran = true; return true }); !errors.Is(err, net.ErrClosed) || ran {
		t.Fatalf("Write after Close: %v, ran %v", err, ran)
	}
	// The number goes to the next descriptor opened; a second Close must
	// leave it alone.
	p, q, err := osPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p)
	defer unix.Close(q)
	if err := fd.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if inode(p) == 0 || inode(q) == 0 {
		t.Fatal("a second Close closed another file's descriptor")
	}
	if err := fd.Read(func(uintptr) bool { return false }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}

func osPipe() (int, int, error) {
	var p [2]int
	err := unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}

// TestFDNeverWaits: a call whose function is not done ends with
// ErrWouldBlock instead of waiting.
func TestFDNeverWaits(t *testing.T) {
	_, s := tcptest.Pair(t)
	fd := own(t, s)
	defer fd.Close()
	calls := 0
	if err := fd.Read(func(uintptr) bool { calls++; return false }); !errors.Is(err, ErrWouldBlock) || calls != 1 {
		t.Fatalf("Read: %v after %d calls", err, calls)
	}
}

// TestFDCloseUnderLoad: calls on many goroutines and a Close among them;
// no call ever sees the descriptor closed or reused under it, and the
// descriptor is closed once they are done.
func TestFDCloseUnderLoad(t *testing.T) {
	for range 20 {
		_, s := tcptest.Pair(t)
		fd := own(t, s)
		num, ino := fd.fd, inode(fd.fd)
		var wg sync.WaitGroup
		var bad, ran atomic.Int64
		for range 4 {
			wg.Go(func() {
				for fd.Control(func(f uintptr) {
					ran.Add(1)
					if inode(int(f)) != ino {
						bad.Add(1)
					}
				}) == nil {
				}
			})
		}
		// Other descriptors opened meanwhile would take a closed number.
		wg.Go(func() {
			for range 50 {
				if p, q, err := osPipe(); err == nil {
					unix.Close(p)
					unix.Close(q)
				}
			}
		})
		for ran.Load() < 100 {
			time.Sleep(10 * time.Microsecond)
		}
		_ = fd.Close()
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("%d calls saw the descriptor closed or reused", bad.Load())
		}
		if inode(num) == ino {
			t.Fatal("not closed after the calls ended")
		}
	}
}

// TestFDNetConnShares: a net.Conn from NetConn writes to the same socket
// and keeps it open after the FD is closed, until it is closed too.
func TestFDNetConnShares(t *testing.T) {
	c, s := tcptest.Pair(t)
	fd := own(t, s)
	nc, err := fd.NetConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	nc.Close()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("peer read %v, want EOF once both are closed", err)
	}
	if _, err := fd.NetConn(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("NetConn after Close: %v", err)
	}
}

// own takes s's socket into a new FD.
func own(t *testing.T, s net.Conn) *FD {
	t.Helper()
	fd := new(FD)
	if !fd.Own(s) {
		t.Fatal("a TCP connection was not taken")
	}
	return fd
}
