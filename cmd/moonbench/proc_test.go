//go:build linux

package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestParseWriteCounts(t *testing.T) {
	out := "12,,syscalls:sys_enter_write,1000,100.00,,\n" +
		"<not counted>,,syscalls:sys_enter_writev,0,100.00,,\n" +
		"30000,,syscalls:sys_enter_sendto,1000,100.00,,\n" +
		"5,,syscalls:sys_enter_sendmsg,1000,100.00,,\n" +
		"100,,syscalls:sys_enter_io_uring_enter,1000,100.00,,\n"
	if n, err := parseWriteCounts(out); err != nil || n != 30117 {
		t.Fatalf("got %d, %v; want 30117", n, err)
	}
	if _, err := parseWriteCounts("12,,syscalls:sys_enter_write,1000,100.00,,\n"); err == nil {
		t.Fatal("a count with events missing was accepted")
	}
	if _, err := parseWriteCounts("x,,syscalls:sys_enter_write,1,1,,\n1,,syscalls:sys_enter_writev\n1,,syscalls:sys_enter_sendto\n1,,syscalls:sys_enter_sendmsg\n1,,syscalls:sys_enter_io_uring_enter\n"); err == nil {
		t.Fatal("a bad count was accepted")
	}
}

// TestMachineNamesTheCPU: the header of ab's and cluster-compare's
// tables names the CPU count and, where /proc/cpuinfo has one, the model.
func TestMachineNamesTheCPU(t *testing.T) {
	got := machine()
	if want := fmt.Sprintf("%d CPUs", runtime.NumCPU()); !strings.HasPrefix(got, want) {
		t.Fatalf("machine() = %q, want it to start with %q", got, want)
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !strings.Contains(string(b), "model name") {
		t.Skip("no CPU model in /proc/cpuinfo here")
	}
	if !strings.HasSuffix(got, ")") || strings.Contains(got, "()") {
		t.Fatalf("machine() = %q: no CPU model", got)
	}
}
