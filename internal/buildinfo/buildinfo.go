// Package buildinfo holds the version stamped into banger's binaries at
// build time with -ldflags "-X github.com/bangervm/banger/internal/buildinfo.Version=...".
package buildinfo

// Set by the linker; the defaults mark an unstamped development build.
var (
	Version   = "dev"
	Commit    = "unknown"
	BuildTime = "unknown"
)

// UpdateURL and UpdateKey are where `banger update` finds releases and the
// key they must be signed with: the manifest's URL and the base64 of the
// public key's PEM. Set only by the linker (make release), never by
// configuration: an installed banger cannot be redirected or re-keyed.
// Empty in a build that was not made for release: update refuses.
var (
	UpdateURL = ""
	UpdateKey = ""
)
