package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/testutil"
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
	ln, err := listenInNetns(pid, addr)
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse("http://deb.debian.org")
	rp := httputil.NewSingleHostReverseProxy(upstream)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || !(strings.HasPrefix(p, "/debian/") || strings.HasPrefix(p, "/debian-security/")) || strings.Contains(p, "..") {
			http.Error(w, "only Debian's archive", http.StatusForbidden)
			return
		}
		r.Host = upstream.Host
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// listenInNetns opens a TCP listener in the network namespace of pid. The
// socket keeps its namespace; only the thread that made it switched, and
// that thread is discarded.
func listenInNetns(pid int, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns into pid %d's network namespace: %w", pid, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}
