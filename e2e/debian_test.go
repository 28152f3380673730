package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// TestPullDebianBookworm builds the default catalog image with debootstrap
// from the host's Debian mirror (about a minute).
func TestPullDebianBookworm(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "debootstrap", "debootstrap")
	e := newEnv(t)
	e.ok("image", "pull", "debian-bookworm")
	out := e.ok("image", "show", "debian-bookworm", "--json")
	if !strings.Contains(out, `"source": "debootstrap"`) || !strings.Contains(out, "/bin/bash") {
		t.Errorf("show: %s", out)
	}
	rootfs := jsonField(t, out, "rootfs")
	for _, p := range []string{"/usr/bin/git", "/usr/bin/curl", "/usr/bin/less", "/usr/bin/ps", "/usr/sbin/ip", "/etc/ssl/certs/ca-certificates.crt"} {
		if o, _ := exec.Command("debugfs", "-R", "stat "+p, rootfs).CombinedOutput(); strings.Contains(string(o), "File not found") {
			t.Errorf("%s missing from debian-bookworm", p)
		}
	}
	if o, _ := exec.Command("debugfs", "-R", "cat /usr/lib/os-release", rootfs).Output(); !strings.Contains(string(o), "bookworm") {
		t.Errorf("os-release: %s", o)
	}
	if o, err := exec.Command("e2fsck", "-fn", rootfs).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v %s", err, o)
	}
}

func jsonField(t *testing.T, js, key string) string {
	t.Helper()
	i := strings.Index(js, `"`+key+`": "`)
	if i < 0 {
		t.Fatalf("no %s in %s", key, js)
	}
	rest := js[i+len(key)+5:]
	return rest[:strings.Index(rest, `"`)]
}
