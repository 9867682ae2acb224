//go:build linux

package main

import "testing"

func TestParseWriteCounts(t *testing.T) {
	out := "12,,syscalls:sys_enter_write,1000,100.00,,\n" +
		"<not counted>,,syscalls:sys_enter_writev,0,100.00,,\n" +
		"30000,,syscalls:sys_enter_sendto,1000,100.00,,\n" +
		"5,,syscalls:sys_enter_sendmsg,1000,100.00,,\n"
	if n, err := parseWriteCounts(out); err != nil || n != 30017 {
		t.Fatalf("got %d, %v; want 30017", n, err)
	}
	if _, err := parseWriteCounts("12,,syscalls:sys_enter_write,1000,100.00,,\n"); err == nil {
		t.Fatal("a count with events missing was accepted")
	}
	if _, err := parseWriteCounts("x,,syscalls:sys_enter_write,1,1,,\n1,,syscalls:sys_enter_writev\n1,,syscalls:sys_enter_sendto\n1,,syscalls:sys_enter_sendmsg\n"); err == nil {
		t.Fatal("a bad count was accepted")
	}
}
