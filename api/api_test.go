package api

import (
	"fmt"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// Every class must survive the round trip through the wire form.
func TestErrorRoundTrip(t *testing.T) {
	for _, class := range errdefs.Classes() {
		err := fmt.Errorf("image %q: %w", "x", class)
		if Status(err) == 500 {
			t.Errorf("%v has no status", class)
		}
		back := ErrorFrom(err).Err()
		if errdefs.Class(back) != class || back.Error() != err.Error() {
			t.Errorf("round trip of %v gave %v (class %v)", err, back, errdefs.Class(back))
		}
	}
	if Status(fmt.Errorf("plain")) != 500 {
		t.Error("unclassed error should be 500")
	}
}
