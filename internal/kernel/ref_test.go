package kernel

import (
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// A kernel reference must name its registry: a bare word is a mistyped
// catalog name, never Docker Hub's library.
func TestParseKernelRef(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:5000/kernels/k:6.1", "localhost/k", "ghcr.io/org/kernel:6.1", "registry.example/k@sha256:" + strings.Repeat("a", 64)} {
		if _, err := parseKernelRef(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"debian-clod", "foo/bar", "library/linux:6.1", "ghcr.io/Org/UPPER", ""} {
		_, err := parseKernelRef(bad)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "catalog name (debian-cloud") {
			t.Errorf("%q: %v; want a usage error naming the catalog", bad, err)
		}
	}
}
