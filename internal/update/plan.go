// Package update is `banger update`: find out from the signed release
// manifest whether a newer banger exists, and replace an installed banger
// with a release after verifying it (signatures by the key compiled into
// the running binary, sizes, hashes), checking the new daemon accepts the
// owner's state store, and rolling back to the previous binaries when the
// new ones do not start or their doctor finds a new failure.
package update

import (
	"fmt"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// Plan is what an update would do, decided from a verified manifest.
type Plan struct {
	Installed string `json:"installed"`
	Latest    string `json:"latest"`
	// Target is the release to install; its Version equals Installed when
	// there is nothing to do.
	Target release.Release `json:"target"`
	// UpdateAvailable: Latest is newer than Installed.
	UpdateAvailable bool `json:"updateAvailable"`
	// Downgrade: Target is older than Installed (only when asked by name).
	Downgrade bool `json:"downgrade"`
}

// Current reports a plan with nothing to do.
func (p Plan) Current() bool { return p.Target.Version == p.Installed }

// Decide plans the update from installed to the manifest's latest, or to
// the version to names. A manifest whose latest is older than the
// installed version is refused (a mirror serving an old, validly signed
// manifest to hold banger back or walk it back to a vulnerable release)
// unless to names a version explicitly: going back is then the user's
// choice.
func Decide(m release.Manifest, installed, to string) (Plan, error) {
	if _, err := release.ParseVersion(installed); err != nil {
		return Plan{}, fmt.Errorf("installed banger %q is not a release (a development build?): update it by hand, or install a release with install.sh: %w", installed, errdefs.ErrFailedPrecondition)
	}
	newer, err := release.CompareVersions(m.Latest, installed)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Installed: installed, Latest: m.Latest, UpdateAvailable: newer > 0}
	want := m.Latest
	if to != "" {
		if _, err := release.ParseVersion(to); err != nil {
			return Plan{}, err
		}
		want = to
	} else if newer < 0 {
		return Plan{}, fmt.Errorf("the manifest names %s as the latest release, older than the installed %s: refusing (an old manifest served as new is a rollback attack); to go back to %s on purpose: banger update --to %s: %w",
			m.Latest, installed, m.Latest, m.Latest, errdefs.ErrPermissionDenied)
	}
	rel, ok := m.Find(want)
	if !ok {
		return Plan{}, fmt.Errorf("release %s is not in the manifest (latest is %s): %w", want, m.Latest, errdefs.ErrNotFound)
	}
	p.Target = rel
	c, _ := release.CompareVersions(want, installed)
	p.Downgrade = c < 0
	return p, nil
}
