//go:build crashpoint

package crashpoint

import (
	"fmt"
	"os"
	"syscall"
)

// Enabled reports whether this build has crash points.
const Enabled = true

// At kills this process with SIGKILL, as kill -9 would, when $BANGER_CRASH_AT
// is name. It first writes the point's name to stderr (the daemon log), so
// a test can tell its crash from any other.
func At(name string) {
	if os.Getenv(Env) != name {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint %s: SIGKILL\n", name)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
