// Command moonwire runs the moonwire WebSocket router: see package cli for
// its commands and flags. A custom build with plugins of its own is this
// main plus the plugins' imports (examples/plugin).
package main

import (
	"os"

	"github.com/moonwire/moonwire/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
