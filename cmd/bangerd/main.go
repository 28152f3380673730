// Command bangerd is banger's daemon. The banger CLI starts it on first use;
// `bangerd --check-migrations` reports whether the state store matches this
// binary (exit 0 up to date, 1 migrations pending, 2 store is newer).
package main

import (
	"os"

	"github.com/bangervm/banger/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}
