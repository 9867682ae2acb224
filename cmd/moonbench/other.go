//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "moonbench: Linux only (epoll, /proc)")
	os.Exit(1)
}
