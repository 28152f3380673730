package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/release"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/debarchive"
)

// updateAddr is where the release server listens, in the container's
// network namespace.
const updateAddr = "127.0.0.1:8088"

// releaseServer serves signed releases on updateAddr inside a
// container, as the release location would.
type releaseServer struct {
	t     *testing.T
	key   *ecdsa.PrivateKey
	mu    sync.Mutex
	files map[string][]byte
}

func newReleaseServer(t *testing.T, pid int, key *ecdsa.PrivateKey) *releaseServer {
	s := &releaseServer{t: t, key: key, files: map[string][]byte{}}
	ln, err := debarchive.ListenInNetns(pid, updateAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b, ok := s.files[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *releaseServer) serve(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == nil {
		delete(s.files, path)
		return
	}
	s.files[path] = b
}

func (s *releaseServer) get(path string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[path]
}

func (s *releaseServer) sign(b []byte) []byte {
	sig, err := release.Sign(s.key, b)
	if err != nil {
		s.t.Fatal(err)
	}
	return sig
}

// publish serves a signed manifest naming latest, and each tarball with
// its signed SHA256SUMS.
func (s *releaseServer) publish(latest string, tarballs map[string][]byte) {
	m := release.Manifest{Latest: latest, Released: time.Now().UTC().Truncate(time.Second)}
	for v, tb := range tarballs {
		sums := release.Sums(map[string][]byte{release.TarballName(v): tb})
		s.serve("/releases/"+release.TarballPath(v), tb)
		s.serve("/releases/"+v+"/SHA256SUMS", sums)
		s.serve("/releases/"+v+"/SHA256SUMS.sig", s.sign(sums))
		m.Releases = append(m.Releases, release.Release{Version: v, Tarball: release.TarballPath(v), Size: int64(len(tb)), SHA256: release.SHA256Hex(tb), Released: m.Released})
	}
	body, err := m.Marshal()
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve("/releases/manifest.json", body)
	s.serve("/releases/manifest.json.sig", s.sign(body))
}

// buildRelease builds banger, bangerd and banger-agent stamped with
// version, the loopback release URL and key's public half, into dir.
func buildRelease(t *testing.T, dir, version string, key *ecdsa.PrivateKey) {
	t.Helper()
	pub, err := release.MarshalPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	bi := "github.com/bangervm/banger/internal/buildinfo."
	ldflags := strings.Join([]string{
		"-X", bi + "Version=" + version, "-X", bi + "Commit=commit-" + version, "-X", bi + "BuildTime=2026-12-03T00:00:00Z",
		"-X", bi + "UpdateURL=http://" + updateAddr + "/releases/manifest.json",
		"-X", bi + "UpdateKey=" + base64.StdEncoding.EncodeToString(pub),
	}, " ")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", dir+"/", "../cmd/banger", "../cmd/bangerd", "../cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", version, err, out)
	}
}

// releaseTarball is a release tarball of the three files, by name.
func releaseTarball(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range release.Binaries {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(files[n]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func readBinaries(t *testing.T, dir string) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range release.Binaries {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

// installState is every file an install owns, as the host sees the
// container's root.
func (c *sdContainer) installState() map[string]string {
	p := install.DefaultPaths()
	out := map[string]string{}
	for _, f := range []string{p.CLI, p.Daemon, p.Agent, p.Record, p.DaemonUnit(), p.HelperUnit()} {
		b, err := os.ReadFile(filepath.Join(c.root, f))
		if err != nil {
			c.t.Fatal(err)
		}
		out[f] = release.SHA256Hex(b)
	}
	entries, _ := os.ReadDir(filepath.Join(c.root, filepath.Dir(p.Agent)))
	for _, e := range entries {
		out["entry "+e.Name()] = ""
	}
	return out
}

// TestSystemUpdate: under a real systemd, a banger installed from one
// release updates itself from a release server (on the container's
// loopback) to the next, verified with the key compiled into it: --check
// says 10, --dry-run changes nothing, a tampered tarball is refused with
// the install byte for byte as it was (as does every other refusal: keys,
// sizes, an older latest, a store newer than the release, an exec in
// flight), the update keeps the running VM running and usable and
// records the new version, a release whose daemon does not start or whose
// doctor fails is rolled back with the VM still alive, --to goes back on
// purpose, and the VM then stops with its data flushed.
func TestSystemUpdate(t *testing.T) {
	testutil.SkipShort(t, "builds two releases, boots a systemd container and a guest")
	key, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	builds := t.TempDir()
	oldDir, newDir := filepath.Join(builds, "v0.1.0"), filepath.Join(builds, "v0.2.0")
	buildRelease(t, oldDir, "v0.1.0", key)
	buildRelease(t, newDir, "v0.2.0", key)
	newBins := readBinaries(t, newDir)

	c, fx := bootWithBanger(t)
	src := filepath.Join(c.root, "srv/banger-old")
	if out, err := exec.Command("cp", "-r", oldDir, src).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	c.ok(0, "chmod", "-R", "a+rX", "/srv/banger-old")
	c.ok(0, "useradd", "-m", "-u", strconv.Itoa(sdOwnerUID), "-U", sdOwner)
	c.ok(0, "/srv/banger-old/banger", "system", "install", "--owner", sdOwner)
	fx.importAs(c, sdOwnerUID)
	c.ok(sdOwnerUID, "banger", "vm", "run", "-d", "--name", "keep", "--image", "bb")
	alive := c.sameVM(t, sdOwnerUID, "keep")

	srv := newReleaseServer(t, c.pid, key)
	good := releaseTarball(t, newBins)
	srv.publish("v0.2.0", map[string][]byte{"v0.2.0": good})

	r := c.run(sdOwnerUID, "banger", "update", "--check")
	if r.code != 10 || !strings.Contains(r.out, "v0.2.0") || !strings.Contains(r.out, "v0.1.0") {
		t.Fatalf("update --check: exit %d %q %q; want 10 naming both versions", r.code, r.out, r.err)
	}
	var plan struct {
		Installed, Latest string
		UpdateAvailable   bool
	}
	r = c.run(sdOwnerUID, "banger", "update", "--check", "--json")
	testutilJSON(t, r.out, &plan)
	if r.code != 10 || plan.Installed != "v0.1.0" || plan.Latest != "v0.2.0" || !plan.UpdateAvailable {
		t.Fatalf("update --check --json: exit %d %+v", r.code, plan)
	}
	before := c.installState()
	if out := c.ok(0, "banger", "update", "--dry-run"); !strings.Contains(out, "dry run") {
		t.Errorf("update --dry-run: %q", out)
	}
	if after := c.installState(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("--dry-run changed the install:\n%v\n%v", before, after)
	}

	// Each refusal leaves the install byte for byte as it was.
	other, _ := release.GenerateKey()
	tarPath := "/releases/" + release.TarballPath("v0.2.0")
	sumsPath := "/releases/v0.2.0/SHA256SUMS"
	publishGood := func() {
		srv.mu.Lock()
		srv.files = map[string][]byte{}
		srv.mu.Unlock()
		srv.publish("v0.2.0", map[string][]byte{"v0.2.0": good})
	}
	script := func(version string, migrations int) map[string][]byte {
		return map[string][]byte{
			"banger":       []byte(fmt.Sprintf("#!/bin/sh\n[ \"$1\" = version ] && echo '{\"version\":\"%s\",\"commit\":\"c\",\"buildTime\":\"b\",\"apiVersion\":\"1\"}'\n", version)),
			"bangerd":      []byte(fmt.Sprintf("#!/bin/sh\n[ \"$1\" = --check-migrations ] && exit %d\necho 'this daemon does not start' >&2\nexit 1\n", migrations)),
			"banger-agent": newBins["banger-agent"],
		}
	}
	for _, tc := range []struct {
		name  string
		setup func()
		says  string
	}{
		{"tarball modified", func() {
			bad := append([]byte(nil), good...)
			bad[len(bad)/2] ^= 0xff
			srv.serve(tarPath, bad)
		}, "modified"},
		{"SHA256SUMS signed by another key", func() {
			sig, _ := release.Sign(other, srv.get(sumsPath))
			srv.serve(sumsPath+".sig", sig)
		}, "signature"},
		{"SHA256SUMS signature missing", func() { srv.serve(sumsPath+".sig", nil) }, "404"},
		{"truncated download", func() { srv.serve(tarPath, good[:len(good)-100]) }, "bytes"},
		{"oversized download", func() { srv.serve(tarPath, append(append([]byte(nil), good...), make([]byte, 4096)...)) }, "bytes"},
		{"manifest signed by another key", func() {
			sig, _ := release.Sign(other, srv.get("/releases/manifest.json"))
			srv.serve("/releases/manifest.json.sig", sig)
		}, "signature"},
		{"manifest naming an older latest", func() {
			srv.publish("v0.0.9", map[string][]byte{"v0.0.9": releaseTarball(t, script("v0.0.9", 0))})
		}, "rollback attack"},
		{"store newer than the release's daemon", func() {
			srv.publish("v0.2.0", map[string][]byte{"v0.2.0": releaseTarball(t, script("v0.2.0", 2))})
		}, "state store is newer"},
	} {
		publishGood()
		tc.setup()
		if r := c.run(0, "banger", "update"); r.code == 0 || !strings.Contains(r.err, tc.says) {
			t.Fatalf("%s: update exit %d %s; want a refusal saying %q", tc.name, r.code, r.err, tc.says)
		}
		if after := c.installState(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("%s: a refused update changed the install:\n%v\n%v", tc.name, before, after)
		}
	}
	publishGood()
	// An exec session in flight: refused without --force.
	c.ok(sdOwnerUID, "banger", "vm", "exec", "keep", "--", "sh", "-c", "echo flushed-by-stop > /update-marker")
	bg := exec.Command("nsenter", "-t", strconv.Itoa(c.pid), "-a", "setpriv", "--reuid", strconv.Itoa(sdOwnerUID), "--regid", strconv.Itoa(sdOwnerUID), "--init-groups",
		"env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/"+sdOwner, "banger", "vm", "exec", "keep", "--", "sleep", "600")
	// Its own process group: nsenter forks, and the banger inside must
	// go with it.
	bg.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	stopBG := func() { syscall.Kill(-bg.Process.Pid, syscall.SIGKILL); bg.Wait() }
	defer stopBG()
	waitOps := func(inFlight bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			var st install.Status
			testutilJSON(t, c.run(sdOwnerUID, "banger", "system", "status", "--json").out, &st)
			if st.Daemon != nil && (len(st.Daemon.Operations) > 0) == inFlight {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("operations in flight: %+v, want some: %v", st.Daemon, inFlight)
			}
		}
	}
	waitOps(true)
	if r := c.run(0, "banger", "update"); r.code == 0 || !strings.Contains(r.err, "/exec") || !strings.Contains(r.err, "--force") {
		t.Fatalf("update during an exec session: exit %d %s; want a refusal naming it and --force", r.code, r.err)
	}
	if after := c.installState(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("an update refused for an operation in flight changed the install")
	}
	stopBG()
	waitOps(false)
	alive("the refused updates")

	c.ok(0, "banger", "update")
	alive("the update")
	var st install.Status
	testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
	if st.Install == nil || st.Install.Version != "v0.2.0" || st.Install.Commit != "commit-v0.2.0" || st.Daemon == nil || st.Daemon.Version != "v0.2.0" || len(st.Drift) != 0 {
		t.Fatalf("after the update: system status %+v", st)
	}
	var checks []struct{ Name, Status, Detail string }
	testutilJSON(t, c.run(sdOwnerUID, "banger", "doctor", "--json").out, &checks)
	for _, ch := range checks {
		if ch.Status == "fail" {
			t.Errorf("doctor after the update: %s fails: %s", ch.Name, ch.Detail)
		}
		if ch.Name == "agents" && (ch.Status != "warn" || !strings.Contains(ch.Detail, "keep (agent v0.1.0)")) {
			t.Errorf("doctor agents after the update: %s %s; want a warning naming keep's v0.1.0 agent", ch.Status, ch.Detail)
		}
	}
	if r := c.run(sdOwnerUID, "banger", "update", "--check"); r.code != 0 {
		t.Errorf("update --check after the update: exit %d %s", r.code, r.out)
	}

	// Rollbacks to v0.2.0: a release whose daemon does not start, and
	// one whose doctor fails a check (its banger prints a failing kvm
	// check; its daemon is v0.2.0's, which starts).
	doctorFails := map[string][]byte{
		"banger": []byte(`#!/bin/sh
case "$1" in
version) echo '{"version":"v0.3.1","commit":"c","buildTime":"b","apiVersion":"1"}';;
doctor) echo '[{"name":"update-canary","status":"fail","detail":"planted by the test","fix":"none"}]'; exit 1;;
*) exit 3;;
esac
`),
		"bangerd":      newBins["bangerd"],
		"banger-agent": newBins["banger-agent"],
	}
	for _, tc := range []struct {
		version string
		files   map[string][]byte
		says    string
	}{
		{"v0.3.0", script("v0.3.0", 0), "on the new binaries"},
		{"v0.3.1", doctorFails, "the new doctor fails update-canary (planted by the test)"},
	} {
		srv.publish(tc.version, map[string][]byte{"v0.2.0": good, tc.version: releaseTarball(t, tc.files)})
		before = c.installState()
		r = c.run(0, "banger", "update")
		if r.code == 0 || !strings.Contains(r.err, "rolled back") || !strings.Contains(r.err, tc.says) {
			t.Fatalf("update to %s: exit %d %s; want a rollback saying %q", tc.version, r.code, r.err, tc.says)
		}
		if after := c.installState(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("after the rollback from %s, the install differs:\n%v\n%v", tc.version, before, after)
		}
		testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
		if st.Daemon == nil || st.Daemon.Version != "v0.2.0" || !st.HelperAnswering || len(st.Drift) != 0 {
			t.Fatalf("after the rollback from %s: system status %+v", tc.version, st)
		}
		alive("the rollback from " + tc.version)
	}

	// --to goes back to a named, older release on purpose.
	srv.publish("v0.2.0", map[string][]byte{"v0.1.0": releaseTarball(t, readBinaries(t, oldDir)), "v0.2.0": good})
	if r := c.run(0, "banger", "update", "--to", "v0.1.0"); r.code != 0 || !strings.Contains(r.err, "going back from v0.2.0 to v0.1.0") {
		t.Fatalf("update --to v0.1.0: exit %d %s", r.code, r.err)
	}
	testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
	if st.Install == nil || st.Install.Version != "v0.1.0" || st.Daemon == nil || st.Daemon.Version != "v0.1.0" || len(st.Drift) != 0 {
		t.Fatalf("after --to v0.1.0: system status %+v", st)
	}
	alive("update --to v0.1.0")

	// The VM started before the update stops with its data flushed and
	// boots again with it.
	if out := c.ok(sdOwnerUID, "banger", "vm", "stop", "keep"); !strings.Contains(out, "synced") {
		t.Errorf("vm stop after the update: %q, want a synced stop", out)
	}
	c.ok(sdOwnerUID, "banger", "vm", "start", "keep")
	if out := c.ok(sdOwnerUID, "banger", "vm", "exec", "keep", "--", "cat", "/update-marker"); strings.TrimSpace(out) != "flushed-by-stop" {
		t.Errorf("after stop and start: marker %q", out)
	}
}
