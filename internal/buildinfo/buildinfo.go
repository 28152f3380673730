// Package buildinfo holds the version stamped into banger's binaries at
// build time with -ldflags "-X github.com/bangervm/banger/internal/buildinfo.Version=...".
package buildinfo

// Set by the linker; the defaults mark an unstamped development build.
var (
	Version   = "dev"
	Commit    = "unknown"
	BuildTime = "unknown"
)
