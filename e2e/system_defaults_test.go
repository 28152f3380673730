package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/debarchive"
)

// TestSystemInstallDefaults: under a real systemd, the owner's first
// `vm run` with nothing pulled gets the default kernel (apt-get download)
// and builds the default image (mmdebstrap) inside the installed daemon's
// hardened unit (no capability, NoNewPrivileges, RestrictNamespaces, a
// system call filter, read-only /home), with no sudo, and the guest runs.
// Debian's archive reaches the container (which has no network of its own)
// through an apt proxy listening on the container's loopback.
func TestSystemInstallDefaults(t *testing.T) {
	testutil.SkipShort(t, "boots a systemd container, builds debian-bookworm and boots it")
	testutil.RequireTool(t, "mmdebstrap", "mmdebstrap")
	testutil.RequireTool(t, "fakechroot", "fakechroot")
	c, _ := bootWithBanger(t)
	c.ok(0, "useradd", "-m", "-u", strconv.Itoa(sdOwnerUID), "-U", sdOwner)
	const proxy = "127.0.0.1:3142"
	serveDebianArchive(t, c.pid, proxy)
	// The container's apt, which the daemon's kernel pull uses and whose
	// first mirror the image build uses, sees only the proxy.
	sources := fmt.Sprintf(`Types: deb
URIs: http://%[1]s/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://%[1]s/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`, proxy)
	apt := filepath.Join(c.root, "etc/apt")
	os.Remove(filepath.Join(apt, "sources.list"))
	if err := os.RemoveAll(filepath.Join(apt, "sources.list.d")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(apt, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(apt, "sources.list.d/debian.sources"), []byte(sources), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ok(0, "apt-get", "update", "-qq")

	c.ok(0, "/srv/banger-src/banger", "system", "install", "--owner", sdOwner)
	out := c.ok(sdOwnerUID, "banger", "vm", "run", "--rm", "--", "sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; stat -c %U:%G /etc/shadow")
	if got := strings.Fields(out); strings.Join(got, " ") != "bookworm root:shadow" {
		t.Fatalf("in the default guest: %q, want bookworm and /etc/shadow root:shadow", out)
	}
	for _, want := range []string{"debian-bookworm", "debian-cloud"} {
		if out := c.ok(sdOwnerUID, "banger", "image", "list") + c.ok(sdOwnerUID, "banger", "kernel", "list"); !strings.Contains(out, want) {
			t.Errorf("%s not listed after first use: %s", want, out)
		}
	}
}

// serveDebianArchive listens on addr inside the network namespace of pid
// and forwards GET and HEAD requests for Debian's archive (/debian/ and
// /debian-security/, nothing else) to deb.debian.org from the host's
// network: the container's apt gets Debian's own signed indexes and
// packages, and nothing else leaves it.
func serveDebianArchive(t *testing.T, pid int, addr string) {
	t.Helper()
	ln, err := debarchive.ListenInNetns(pid, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: debarchive.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}
