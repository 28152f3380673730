package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDepsLackGuestCode: bangerd, the host daemon, never links the guest
// agent or the SSH and SFTP servers the agent runs: guest-side code stays
// out of the process that guards the host.
func TestDepsLackGuestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %v", deps)
	}
	banned := []string{
		"github.com/bangervm/banger/internal/agent", // the guest agent
		"github.com/pkg/sftp",                       // its SFTP server
	}
	for _, d := range deps {
		for _, b := range banned {
			if d == b || strings.HasPrefix(d, b+"/") {
				t.Errorf("bangerd depends on %s (guest-side code)", d)
			}
		}
	}
}
