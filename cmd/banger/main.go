// Command banger is the banger CLI. All of it lives in internal/cli.
package main

import (
	"os"

	"github.com/bangervm/banger/internal/cli"
)

func main() {
	os.Exit(cli.Run(cli.NewFactory(), os.Args[1:]))
}
