package catalog

import (
	"testing"

	"github.com/bangervm/banger/internal/names"
)

func TestEntriesValid(t *testing.T) {
	kinds := map[string]bool{"apt": true, "debootstrap": true, "oci": true}
	for _, e := range append(Images(), Kernels()...) {
		if err := names.Validate("catalog entry", e.Name); err != nil {
			t.Error(err)
		}
		if !kinds[e.Kind] || e.Source == "" || e.Description == "" {
			t.Errorf("entry %+v: kind, source and description are required", e)
		}
	}
	if _, ok := Kernel("debian-cloud"); !ok {
		t.Error("debian-cloud kernel missing")
	}
	if _, ok := Image("debian-bookworm"); !ok {
		t.Error("debian-bookworm image missing")
	}
}
