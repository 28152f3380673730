package update

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/release"
)

// build is one build of banger's three binaries, as shell scripts that
// answer what an update asks of them the way the real ones do.
type build struct {
	version string
	// doctorFails names a check the build's doctor fails.
	doctorFails string
	// migrations is bangerd --check-migrations' exit status.
	migrations int
	// failStart: the fake systemd cannot start this build's daemon.
	failStart bool
	// holds overrides the version banger version reports.
	holds string
}

func (b build) files() map[string][]byte {
	reported := b.version
	if b.holds != "" {
		reported = b.holds
	}
	doctor := `[{"name":"kvm","status":"pass","detail":"","fix":""}]`
	code := 0
	if b.doctorFails != "" {
		doctor = fmt.Sprintf(`[{"name":"kvm","status":"pass","detail":"","fix":""},{"name":%q,"status":"fail","detail":"broken","fix":"x"}]`, b.doctorFails)
		code = 1
	}
	cli := fmt.Sprintf(`#!/bin/sh
case "$1" in
version) echo '{"version":"%s","commit":"commit-%s","buildTime":"built-%s","apiVersion":"1"}';;
doctor) echo '%s'; exit %d;;
system) [ "$2" = render-units ] && echo '{"daemon":"daemon unit %s\\n","helper":"helper unit %s\\n"}';;
*) exit 3;;
esac
`, reported, b.version, b.version, doctor, code, b.version, b.version)
	daemon := fmt.Sprintf("#!/bin/sh\n# bangerd %s\n[ \"$1\" = --check-migrations ] && { echo '{\"current\":3,\"latest\":3}'; exit %d; }\nexit 1\n", b.version, b.migrations)
	if b.failStart {
		daemon += "# fail-start\n"
	}
	return map[string][]byte{"banger": []byte(cli), "bangerd": []byte(daemon), "banger-agent": []byte("agent " + b.version + "\n")}
}

func tarGz(t testing.TB, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		body := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
			h.Linkname = ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// regular is a tar entry for a regular file (its content carried in
// Linkname until tarGz writes it).
func regular(name string, body []byte) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Linkname: string(body)}
}

func (b build) tarball(t testing.TB) []byte {
	f := b.files()
	var hs []tar.Header
	for _, n := range release.Binaries {
		hs = append(hs, regular(n, f[n]))
	}
	return tarGz(t, hs...)
}

// env is an installed banger (v0.1.0, scripts under a temporary root), a
// release server on 127.0.0.1, a fake systemd and a fake daemon.
type env struct {
	t      *testing.T
	root   string
	rec    install.Record
	key    *ecdsa.PrivateKey
	srv    *httptest.Server
	mu     sync.Mutex
	served map[string][]byte
	sd     *fakeSystemd
	daemon *fakeDaemon
}

func newEnv(t *testing.T) *env {
	root := t.TempDir()
	p := install.Paths{
		CLI: root + "/usr/local/bin/banger", Daemon: root + "/usr/local/bin/bangerd", Agent: root + "/usr/local/lib/banger/banger-agent",
		ConfigDir: root + "/etc/banger", Record: root + "/etc/banger/install.toml", UnitDir: root + "/etc/systemd/system",
		HelperSocket: "/run/banger/root.sock", DaemonRuntime: "/run/bangerd",
	}
	home := filepath.Join(root, "home")
	for _, d := range []string{filepath.Dir(p.CLI), filepath.Dir(p.Agent), p.ConfigDir, p.UnitDir, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := build{version: "v0.1.0"}
	for n, b := range old.files() {
		dst := map[string]string{"banger": p.CLI, "bangerd": p.Daemon, "banger-agent": p.Agent}[n]
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(p.DaemonUnit(), []byte("daemon unit v0.1.0\n"), 0o644)
	os.WriteFile(p.HelperUnit(), []byte("helper unit v0.1.0\n"), 0o644)
	rec := install.Record{Version: "v0.1.0", Commit: "commit-v0.1.0", BuildTime: "built-v0.1.0",
		Owner: install.Owner{UID: os.Getuid(), GID: os.Getgid(), Name: "dev", Home: home}, Paths: p}
	if err := install.Write(p.Record, rec); err != nil {
		t.Fatal(err)
	}
	rec.Schema = install.Schema
	key, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, rec: rec, key: key, served: map[string][]byte{}, sd: &fakeSystemd{daemon: p.Daemon},
		daemon: &fakeDaemon{vms: []api.VM{{Name: "dev", State: api.VMRunning}}}}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		b, ok := e.served[r.URL.Path]
		e.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) serve(path string, b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b == nil {
		delete(e.served, path)
		return
	}
	e.served[path] = b
}

func (e *env) sign(b []byte) []byte {
	sig, err := release.Sign(e.key, b)
	if err != nil {
		e.t.Fatal(err)
	}
	return sig
}

// publish serves a manifest naming latest and a release per build, all
// signed with the env's key.
func (e *env) publish(latest string, builds ...build) {
	m := release.Manifest{Latest: latest, Released: time.Now().UTC()}
	for _, b := range builds {
		e.publishTarball(b.version, b.tarball(e.t))
		tb := e.served["/releases/"+release.TarballPath(b.version)]
		m.Releases = append(m.Releases, release.Release{Version: b.version, Tarball: release.TarballPath(b.version), Size: int64(len(tb)),
			SHA256: release.SHA256Hex(tb), Released: m.Released})
	}
	body, err := m.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	e.serve("/releases/manifest.json", body)
	e.serve("/releases/manifest.json.sig", e.sign(body))
}

// publishTarball serves tb as version's tarball, with SHA256SUMS and its
// signature.
func (e *env) publishTarball(version string, tb []byte) {
	dir := "/releases/" + version + "/"
	sums := release.Sums(map[string][]byte{release.TarballName(version): tb})
	e.serve(dir+release.TarballName(version), tb)
	e.serve(dir+"SHA256SUMS", sums)
	e.serve(dir+"SHA256SUMS.sig", e.sign(sums))
}

func (e *env) source() Source {
	return Source{ManifestURL: e.srv.URL + "/releases/manifest.json", Key: &e.key.PublicKey}
}

// update does what banger update does: manifest, plan, update.
func (e *env) update(to string, force bool) error {
	ctx := context.Background()
	m, err := e.source().Manifest(ctx)
	if err != nil {
		return err
	}
	plan, err := Decide(m, e.rec.Version, to)
	if err != nil {
		return err
	}
	u := Updater{Source: e.source(), Record: e.rec, Systemd: e.sd, Daemon: e.daemon,
		Wait: func(context.Context, install.Record) error { return nil }}
	return u.Update(ctx, plan, force)
}

// snapshot is every file under the install's root, with its mode.
func (e *env) snapshot() map[string]string {
	out := map[string]string{}
	filepath.WalkDir(e.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			e.t.Fatal(err)
		}
		fi, _ := d.Info()
		b, _ := os.ReadFile(path)
		if d.IsDir() {
			b = nil
		}
		out[strings.TrimPrefix(path, e.root)] = fmt.Sprintf("%v %q", fi.Mode(), b)
		return nil
	})
	return out
}

func (e *env) requireUnchanged(before map[string]string) {
	e.t.Helper()
	after := e.snapshot()
	if !reflect.DeepEqual(before, after) {
		for k, v := range after {
			if before[k] != v {
				e.t.Errorf("%s changed or appeared: %.120s", k, v)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				e.t.Errorf("%s disappeared", k)
			}
		}
	}
}

// fakeSystemd restarts nothing, but fails to start a daemon binary marked
// fail-start, as systemd fails a Type=notify unit whose process exits.
type fakeSystemd struct {
	daemon   string
	restarts []string
}

func (f *fakeSystemd) DaemonReload(context.Context) error       { return nil }
func (f *fakeSystemd) Enable(context.Context, ...string) error  { return nil }
func (f *fakeSystemd) Disable(context.Context, ...string) error { return nil }
func (f *fakeSystemd) Show(context.Context, string) (hostcmd.UnitState, error) {
	return hostcmd.UnitState{}, nil
}
func (f *fakeSystemd) Restart(_ context.Context, units ...string) error {
	b, _ := os.ReadFile(f.daemon)
	f.restarts = append(f.restarts, strings.Join(units, ",")+"@"+strings.Fields(strings.SplitN(string(b), "\n", 3)[1])[2])
	if bytes.Contains(b, []byte("fail-start")) {
		return fmt.Errorf("Job for %s failed: %w", strings.Join(units, ","), errdefs.ErrUnavailable)
	}
	return nil
}

type fakeDaemon struct {
	ops []string
	vms []api.VM
	// lose: VMs are gone after this many VMs calls.
	lose int
	n    int
}

func (f *fakeDaemon) Version(context.Context) (api.VersionInfo, error) {
	return api.VersionInfo{Operations: f.ops}, nil
}

func (f *fakeDaemon) VMs(context.Context) ([]api.VM, error) {
	f.n++
	if f.lose > 0 && f.n > f.lose {
		return nil, nil
	}
	return f.vms, nil
}

func TestUpdate(t *testing.T) {
	e := newEnv(t)
	e.publish("v0.2.0", build{version: "v0.1.0"}, build{version: "v0.2.0"})
	if err := e.update("", false); err != nil {
		t.Fatal(err)
	}
	p := e.rec.Paths
	want := build{version: "v0.2.0"}.files()
	for n, path := range map[string]string{"banger": p.CLI, "bangerd": p.Daemon, "banger-agent": p.Agent} {
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, want[n]) {
			t.Errorf("%s after the update: %q, %v", path, b, err)
		}
	}
	for path, want := range map[string]string{p.DaemonUnit(): "daemon unit v0.2.0\n", p.HelperUnit(): "helper unit v0.2.0\n"} {
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("%s after the update: %q, %v; want the new banger's units", path, b, err)
		}
	}
	rec, err := install.Read(p.Record)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Version != "v0.2.0" || rec.Commit != "commit-v0.2.0" || rec.BuildTime != "built-v0.2.0" {
		t.Errorf("install.toml records %s %s %s, want the new binaries' v0.2.0 commit-v0.2.0 built-v0.2.0", rec.Version, rec.Commit, rec.BuildTime)
	}
	if got := strings.Join(e.sd.restarts, " "); got != "bangerd-root.service@v0.2.0 bangerd.service@v0.2.0" {
		t.Errorf("restarts: %s", got)
	}
	left, _ := filepath.Glob(filepath.Join(e.root, "*/*/*/*"))
	for _, f := range left {
		if strings.HasSuffix(f, ".previous") || strings.Contains(f, ".update-") {
			t.Errorf("left behind: %s", f)
		}
	}
	// Updating again finds nothing to do.
	before := e.snapshot()
	e.rec = rec
	if err := e.update("", false); err != nil {
		t.Fatal(err)
	}
	e.requireUnchanged(before)
}

// Every refusal happens before anything changes: the install stays byte
// for byte as it was, and no service is restarted.
func TestUpdateRefusals(t *testing.T) {
	good := build{version: "v0.2.0"}
	tarPath := "/releases/" + release.TarballPath("v0.2.0")
	for _, tc := range []struct {
		name  string
		setup func(e *env)
		to    string
		want  func(error) bool
		says  string
	}{
		{name: "tarball modified", setup: func(e *env) {
			tb := e.served[tarPath]
			tb = append([]byte(nil), tb...)
			tb[len(tb)/2] ^= 0xff
			e.serve(tarPath, tb)
		}, want: errdefs.IsPermissionDenied, says: "modified"},
		{name: "SHA256SUMS signed by another key", setup: func(e *env) {
			other, _ := release.GenerateKey()
			sig, _ := release.Sign(other, e.served["/releases/v0.2.0/SHA256SUMS"])
			e.serve("/releases/v0.2.0/SHA256SUMS.sig", sig)
		}, want: errdefs.IsPermissionDenied, says: "signature"},
		{name: "SHA256SUMS signature missing", setup: func(e *env) {
			e.serve("/releases/v0.2.0/SHA256SUMS.sig", nil)
		}, want: errdefs.IsNotFound, says: "SHA256SUMS.sig"},
		{name: "tarball re-signed with its new hash, manifest not", setup: func(e *env) {
			e.publishTarball("v0.2.0", build{version: "v0.2.0", doctorFails: "x"}.tarball(t))
		}, want: errdefs.IsPermissionDenied, says: "the manifest"},
		{name: "truncated download", setup: func(e *env) {
			tb := e.served[tarPath]
			e.serve(tarPath, tb[:len(tb)-10])
		}, want: errdefs.IsPermissionDenied, says: "bytes"},
		{name: "oversized download", setup: func(e *env) {
			e.serve(tarPath, append(append([]byte(nil), e.served[tarPath]...), make([]byte, 1<<20)...))
		}, want: errdefs.IsPermissionDenied, says: "bytes"},
		{name: "manifest signed by another key", setup: func(e *env) {
			other, _ := release.GenerateKey()
			sig, _ := release.Sign(other, e.served["/releases/manifest.json"])
			e.serve("/releases/manifest.json.sig", sig)
		}, want: errdefs.IsPermissionDenied, says: "signature"},
		{name: "manifest signature missing", setup: func(e *env) {
			e.serve("/releases/manifest.json.sig", nil)
		}, want: errdefs.IsNotFound, says: "manifest.json.sig"},
		{name: "manifest oversized", setup: func(e *env) {
			e.serve("/releases/manifest.json", make([]byte, release.MaxManifest+1))
		}, want: errdefs.IsPermissionDenied, says: "bytes"},
		{name: "manifest naming an older latest", setup: func(e *env) {
			e.publish("v0.0.9", build{version: "v0.0.9"})
		}, want: errdefs.IsPermissionDenied, says: "rollback attack"},
		{name: "store newer than the release's daemon", setup: func(e *env) {
			e.publish("v0.2.0", build{version: "v0.2.0", migrations: 2})
		}, want: errdefs.IsFailedPrecondition, says: "state store is newer"},
		{name: "operations in flight", setup: func(e *env) {
			e.daemon.ops = []string{"POST /v1/vms"}
		}, want: errdefs.IsFailedPrecondition, says: "POST /v1/vms"},
		{name: "release holds another version", setup: func(e *env) {
			e.publish("v0.2.0", build{version: "v0.2.0", holds: "v0.1.5"})
		}, want: errdefs.IsInvalidArgument, says: "holds banger v0.1.5"},
		{name: "tarball holds an extra file", setup: func(e *env) {
			f := good.files()
			tb := tarGz(t, regular("banger", f["banger"]), regular("bangerd", f["bangerd"]), regular("banger-agent", f["banger-agent"]), regular("evil", []byte("x")))
			e.publishTarballInManifest("v0.2.0", tb)
		}, want: errdefs.IsInvalidArgument, says: "evil"},
		{name: "--to a release not in the manifest", to: "v0.3.0", want: errdefs.IsNotFound, says: "not in the manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.publish("v0.2.0", build{version: "v0.1.0"}, good)
			if tc.setup != nil {
				tc.setup(e)
			}
			before := e.snapshot()
			err := e.update(tc.to, false)
			if err == nil || !tc.want(err) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("update: %v (class %v), want one of the expected class saying %q", err, errdefs.Class(err), tc.says)
			}
			e.requireUnchanged(before)
			if len(e.sd.restarts) > 0 {
				t.Errorf("restarted %v", e.sd.restarts)
			}
		})
	}
}

// publishTarballInManifest serves tb as version's tarball, signed and
// named by a signed manifest: a release that verifies.
func (e *env) publishTarballInManifest(version string, tb []byte) {
	e.publishTarball(version, tb)
	m, _ := release.ParseManifest(e.served["/releases/manifest.json"])
	for i := range m.Releases {
		if m.Releases[i].Version == version {
			m.Releases[i].Size, m.Releases[i].SHA256 = int64(len(tb)), release.SHA256Hex(tb)
		}
	}
	body, err := m.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	e.serve("/releases/manifest.json", body)
	e.serve("/releases/manifest.json.sig", e.sign(body))
}

// --force goes past operations in flight; --to goes back on purpose.
func TestUpdateForceAndTo(t *testing.T) {
	e := newEnv(t)
	e.publish("v0.2.0", build{version: "v0.1.0"}, build{version: "v0.2.0"})
	e.daemon.ops = []string{"POST /v1/vms/dev/exec"}
	if err := e.update("", true); err != nil {
		t.Fatalf("--force: %v", err)
	}
	e.rec, _ = install.Read(e.rec.Paths.Record)
	e.daemon.ops = nil
	e.publish("v0.0.9", build{version: "v0.0.9"})
	if err := e.update("v0.0.9", false); err != nil {
		t.Fatalf("--to an older release: %v", err)
	}
	if rec, _ := install.Read(e.rec.Paths.Record); rec.Version != "v0.0.9" {
		t.Errorf("after --to v0.0.9: install.toml has %s", rec.Version)
	}
}

// A new daemon that does not start, a new doctor that fails a check the
// old one passed, or a VM lost across the restart: the previous binaries
// and record are put back, byte for byte, and restarted.
func TestUpdateRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build build
		lose  bool
		says  string
	}{
		{name: "daemon fails to start", build: build{version: "v0.2.0", failStart: true}, says: "on the new binaries: Job for"},
		{name: "doctor fails", build: build{version: "v0.2.0", doctorFails: "dns"}, says: "the new doctor fails dns (broken)"},
		{name: "VM lost", build: build{version: "v0.2.0"}, lose: true, says: "not running after it: dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.publish("v0.2.0", build{version: "v0.1.0"}, tc.build)
			if tc.lose {
				e.daemon.lose = 1
			}
			before := e.snapshot()
			err := e.update("", false)
			if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("update: %v, want a rollback saying %q", err, tc.says)
			}
			e.requireUnchanged(before)
			if last := e.sd.restarts[len(e.sd.restarts)-1]; last != "bangerd.service@v0.1.0" {
				t.Errorf("restarts %v: want the old daemon restarted last", e.sd.restarts)
			}
		})
	}
}

// A check the old doctor failed too does not roll the update back.
func TestUpdateKeepsOldDoctorFailures(t *testing.T) {
	e := newEnv(t)
	p := e.rec.Paths
	os.WriteFile(p.CLI, build{version: "v0.1.0", doctorFails: "dns"}.files()["banger"], 0o755)
	e.publish("v0.2.0", build{version: "v0.2.0", doctorFails: "dns"})
	if err := e.update("", false); err != nil {
		t.Fatal(err)
	}
}
