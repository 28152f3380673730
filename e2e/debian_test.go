package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// TestPullDebianBookworm builds the default catalog image with mmdebstrap
// from the host's Debian mirror (about a minute), with the daemon as root.
func TestPullDebianBookworm(t *testing.T) {
	e := sharedDebianEnv(t)
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

var (
	debOnce   sync.Once
	debShared *env
	debErr    string
)

// sharedDebianEnv is a home with the debian-bookworm catalog image (built
// once, about a minute) and Debian's cloud kernel, for tests that need
// git and coreutils in the guest. It lives until the package's tests end.
func sharedDebianEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "mmdebstrap", "mmdebstrap")
	testutil.RequireTool(t, "fakechroot", "fakechroot")
	shared := sharedVMEnv(t)
	debOnce.Do(func() {
		home, err := os.MkdirTemp("", "bh-deb-")
		if err != nil {
			debErr = err.Error()
			return
		}
		e := &env{t: t, home: home}
		var k struct{ Vmlinux, Initrd string }
		testutilJSON(t, shared.ok("kernel", "show", "debian-cloud", "--json"), &k)
		for _, args := range [][]string{
			{"kernel", "import", k.Vmlinux, "--initrd", k.Initrd, "--name", "debian-cloud"},
			{"image", "pull", "debian-bookworm"},
		} {
			if r := e.run(args...); r.code != 0 {
				debErr = fmt.Sprintf("banger %v: %s", args, r.err)
				return
			}
		}
		debShared = e
	})
	if debShared == nil {
		t.Fatalf("debian env: %s", debErr)
	}
	e := *debShared
	e.t = t
	return &e
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

// TestDefaultImageUnprivileged: a daemon with no privilege at all (uid
// 65534, no capability, no root helper) pulls the default kernel and
// builds the default image, and a guest boots from them with the
// ownership and modes Debian's packages set (the build only recorded
// them, it could not apply them on the host).
func TestDefaultImageUnprivileged(t *testing.T) {
	testutil.SkipShort(t, "builds debian-bookworm (about a minute) and boots it")
	testutil.RequireRoot(t) // to become uid 65534
	testutil.RequireTool(t, "mmdebstrap", "mmdebstrap")
	testutil.RequireTool(t, "fakechroot", "fakechroot")
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	e := newEnv(t)
	if err := os.Chown(e.home, testutil.Nobody, testutil.Nobody); err != nil {
		t.Fatal(err)
	}
	os.Chmod(binDir, 0o755)
	e.wrap = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	e.extra = append(e.extra, "HOME="+e.home)
	e.ok("kernel", "pull", "debian-cloud")
	e.ok("image", "pull", "debian-bookworm")
	out := e.ok("vm", "run", "--rm", "--image", "debian-bookworm", "--", "sh", "-c",
		". /etc/os-release; echo $VERSION_CODENAME; stat -c '%n %U:%G %A' /etc/shadow /usr/bin/passwd /var/cache/apt/archives/partial /root; id -un")
	want := []string{"bookworm",
		"/etc/shadow root:shadow -rw-r-----",
		"/usr/bin/passwd root:root -rwsr-xr-x",
		"/var/cache/apt/archives/partial _apt:root drwx------",
		"/root root:root drwx------",
		"root"}
	if got := strings.Fields(strings.ReplaceAll(out, "\n", " ")); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("in the guest:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}
