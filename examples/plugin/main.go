// Command plugin is a custom moonwire build: the moonwire command plus
// one plugin, greet. It is all a custom build is: the plugins' imports
// (their init functions register them) and the command line.
//
//	go build -o moonwire-greet ./examples/plugin
//	./moonwire-greet -config examples/plugin/moonwire.toml
package main

import (
	"os"

	"github.com/moonwire/moonwire/cli"
	_ "github.com/moonwire/moonwire/examples/plugin/greet"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
