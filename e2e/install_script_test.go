package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/debarchive"
)

// TestInstallScript: under a real systemd, a user with sudo runs
// `curl -fsSL …/install.sh | sh` non-interactively against releases made
// by make release with throw-away keys and served on the container's
// loopback. A tampered tarball, a missing SHA256SUMS signature, a manifest
// signed by another key, a manifest whose latest is older than the
// script's release, and no terminal to ask on without
// BANGER_INSTALL_NONINTERACTIVE each stop it with nothing installed (no
// binary, no unit, no /etc/banger) and its temporary files gone; the
// genuine release then installs, and system status shows its version;
// the older release's own install.sh then refuses to replace it.
func TestInstallScript(t *testing.T) {
	testutil.SkipShort(t, "builds a release and boots a systemd container")
	for _, tool := range [][2]string{{"make", "make"}, {"sudo", "sudo"}, {"curl", "curl"}, {"openssl", "openssl"}} {
		testutil.RequireTool(t, tool[0], tool[1])
	}
	c := bootSystemd(t, func(root string) { hideHostInstall(t, root) })
	c.ok(0, "useradd", "-m", "-u", strconv.Itoa(sdOwnerUID), "-U", sdOwner)
	if err := os.WriteFile(filepath.Join(c.root, "etc/sudoers.d/banger-e2e"), []byte(sdOwner+" ALL=(root) NOPASSWD: ALL\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	ln, err := debarchive.ListenInNetns(c.pid, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	srv := t.TempDir()
	hs := &http.Server{Handler: http.FileServer(http.Dir(srv))}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	// The releases: the genuine v0.1.0 (make release); the same signed
	// with another key; an older v0.0.9 signed with the right key; the
	// genuine one with its tarball changed, and with SHA256SUMS.sig
	// missing.
	work := t.TempDir()
	tool := filepath.Join(work, "banger-release")
	if out, err := exec.Command("go", "build", "-o", tool, "../cmd/banger-release").CombinedOutput(); err != nil {
		t.Fatalf("build banger-release: %v\n%s", err, out)
	}
	releaseTool := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("banger-release %v: %v\n%s", args, err, out)
		}
	}
	key, otherKey := filepath.Join(work, "key"), filepath.Join(work, "other")
	releaseTool("keygen", "--out", key)
	releaseTool("keygen", "--out", otherKey)
	root, _ := filepath.Abs("..")
	makeRelease := func(dir, version string) {
		t.Helper()
		mk := exec.Command("make", "-C", root, "release", "VERSION="+version, "SIGNING_KEY="+filepath.Join(key, "key.pem"),
			"DIST="+filepath.Join(srv, dir), "RELEASE_BIN="+filepath.Join(work, "bin-"+version), "RELEASE_TOOL="+tool, "RELEASE_URL="+base+"/"+dir)
		if out, err := mk.CombinedOutput(); err != nil {
			t.Fatalf("make release %s: %v\n%s", version, err, out)
		}
	}
	makeRelease("good", "v0.1.0")
	makeRelease("old", "v0.0.9")
	build := func(dir, version, key string) string {
		releaseTool("build", "--version", version, "--key", filepath.Join(key, "key.pem"), "--bin", filepath.Join(work, "bin-v0.1.0"), "--out", filepath.Join(srv, dir), "--url", base+"/"+dir)
		return filepath.Join(srv, dir)
	}
	build("otherkey", "v0.1.0", otherKey)
	tgz := filepath.Join(build("tampered", "v0.1.0", key), "v0.1.0", "banger-v0.1.0-linux-amd64.tar.gz")
	b, err := os.ReadFile(tgz)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(tgz, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(build("nosig", "v0.1.0", key), "v0.1.0", "SHA256SUMS.sig")); err != nil {
		t.Fatal(err)
	}

	// from "" is the script's own URL; "ask" is that, with no terminal
	// to ask on and no BANGER_INSTALL_NONINTERACTIVE.
	installSh := func(from string) result {
		t.Helper()
		script := "curl -fsSL " + base + "/good/install.sh | "
		switch from {
		case "":
			script += "BANGER_INSTALL_NONINTERACTIVE=1 "
		case "ask":
		default:
			script += "BANGER_INSTALL_NONINTERACTIVE=1 BANGER_RELEASE_URL=" + base + "/" + from + " "
		}
		return c.run(sdOwnerUID, "sh", "-c", script+"sh")
	}
	noTempLeft := func(after string) {
		t.Helper()
		if out := c.ok(0, "sh", "-c", "ls -d /tmp/banger-install.* 2>/dev/null || true"); out != "" {
			t.Errorf("install.sh left %s after %s", out, after)
		}
	}
	p := install.DefaultPaths()
	for _, tc := range []struct{ from, want string }{
		{"tampered", "does not match its signed SHA-256"},
		{"nosig", "SHA256SUMS.sig failed"},
		{"otherkey", "manifest.json's signature does not verify"},
		{"old", "older than v0.1.0"},
		{"ask", "no terminal to ask on"},
	} {
		r := installSh(tc.from)
		if r.code == 0 || !strings.Contains(r.err, tc.want) || !strings.Contains(r.err, "nothing was installed") {
			t.Errorf("install.sh from %s: exit %d\n%s\nwant a refusal saying %q", tc.from, r.code, r.err, tc.want)
		}
		for _, f := range []string{p.CLI, p.Daemon, filepath.Dir(p.Agent), p.ConfigDir, p.DaemonUnit(), p.HelperUnit()} {
			if _, err := os.Lstat(filepath.Join(c.root, f)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("install.sh from %s refused, but %s exists (%v)", tc.from, f, err)
			}
		}
		noTempLeft("refusing " + tc.from)
	}

	r := installSh("")
	if r.code != 0 {
		t.Fatalf("install.sh: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	for _, want := range []string{"Verified", "banger v0.1.0 will be installed for " + sdOwner, "sudo is needed"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("install.sh does not say %q:\n%s", want, r.err)
		}
	}
	t.Logf("install.sh:\n%s", r.err)
	noTempLeft("installing")
	installed := func(after string) {
		t.Helper()
		var st install.Status
		testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
		if st.Install == nil || st.Install.Version != "v0.1.0" || st.Install.Owner.UID != sdOwnerUID || st.Daemon == nil || st.Daemon.Version != "v0.1.0" || !st.HelperAnswering || len(st.Drift) != 0 {
			t.Fatalf("system status after %s: %+v", after, st)
		}
	}
	installed("install.sh")

	// The older release's own install.sh refuses to replace the newer
	// install.
	r = c.run(sdOwnerUID, "sh", "-c", "curl -fsSL "+base+"/old/install.sh | BANGER_INSTALL_NONINTERACTIVE=1 sh")
	if r.code == 0 || !strings.Contains(r.err, "banger v0.1.0 is installed, newer than the manifest's latest release v0.0.9") {
		t.Errorf("install.sh of v0.0.9 over v0.1.0: exit %d\n%s\nwant a refusal", r.code, r.err)
	}
	installed("install.sh of an older release")

	// The release after it, made the same way: the installed banger (the
	// URL and key make release compiled in) finds and installs it.
	prev := filepath.Join(work, "manifest.json")
	for _, f := range []string{"manifest.json", "manifest.json.sig"} {
		b, err := os.ReadFile(filepath.Join(srv, "good", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(work, f), b, 0o644)
	}
	mk := exec.Command("make", "-C", root, "release", "VERSION=v0.2.0", "SIGNING_KEY="+filepath.Join(key, "key.pem"), "PREVIOUS_MANIFEST="+prev,
		"DIST="+filepath.Join(srv, "good"), "RELEASE_BIN="+filepath.Join(work, "bin-v0.2.0"), "RELEASE_TOOL="+tool, "RELEASE_URL="+base+"/good")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make release v0.2.0: %v\n%s", err, out)
	}
	if r := c.run(sdOwnerUID, "banger", "update", "--check"); r.code != 10 || !strings.Contains(r.out+r.err, "v0.2.0") {
		t.Errorf("update --check after v0.2.0 was released: exit %d %s%s", r.code, r.out, r.err)
	}
	if r := c.run(0, "banger", "update"); r.code != 0 {
		t.Fatalf("banger update to the next make release: exit %d\n%s%s", r.code, r.out, r.err)
	}
	var st install.Status
	testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
	if st.Install == nil || st.Install.Version != "v0.2.0" || st.Daemon == nil || st.Daemon.Version != "v0.2.0" || len(st.Drift) != 0 {
		t.Errorf("system status after banger update: %+v", st)
	}
}
