package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
)

// fakeDaemon answers as a healthy daemon would, or fails every call
// with err.
type fakeDaemon struct {
	version api.VersionInfo
	engine  api.EngineInfo
	net     api.NetworkInfo
	vms     []api.VM
	images  []api.Image
	kernels []api.Kernel
	err     error
}

func (d *fakeDaemon) Images(context.Context) ([]api.Image, error)   { return d.images, d.err }
func (d *fakeDaemon) Kernels(context.Context) ([]api.Kernel, error) { return d.kernels, d.err }

func (d *fakeDaemon) Version(context.Context) (api.VersionInfo, error) { return d.version, d.err }
func (d *fakeDaemon) Engine(context.Context) (api.EngineInfo, error)   { return d.engine, d.err }
func (d *fakeDaemon) Network(context.Context) (api.NetworkInfo, error) { return d.net, d.err }
func (d *fakeDaemon) VMs(context.Context) ([]api.VM, error)            { return d.vms, d.err }

// testEnv is a healthy host in temp dirs: /dev/kvm and /dev/net/tun as
// plain files under Root, every tool found, lots of disk, a daemon with
// networking on and KVM working, and a private runtime dir and socket.
func testEnv(t *testing.T) (Env, *fakeDaemon) {
	t.Helper()
	dir := t.TempDir()
	layout := paths.Under(filepath.Join(dir, "home"))
	if err := layout.Ensure(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, layout.Socket(), "", 0o600)
	root := filepath.Join(dir, "root")
	writeFile(t, filepath.Join(root, "dev", "kvm"), "", 0o600)
	writeFile(t, filepath.Join(root, "dev", "net", "tun"), "", 0o600)
	d := &fakeDaemon{
		version: api.VersionInfo{Version: "v1", Commit: "c1", APIVersion: api.Version, PID: 42},
		engine: api.EngineInfo{Default: "qemu", Reason: "Firecracker unavailable (firecracker not found in PATH)", Engines: []api.EngineStatus{
			{Name: "firecracker", Note: "firecracker not found in PATH"},
			{Name: "qemu", Available: true, Version: "7.2.22", Accel: "kvm", Note: "KVM available"},
		}},
		net: api.NetworkInfo{
			Configured: true, Enabled: true, Bridge: "banger0", Subnet: "172.30.0.0/24", Gateway: "172.30.0.1", ForwardPolicyDrop: true,
			// Nothing listens there: no test queries a DNS server it did
			// not start.
			Ops: api.OpsLocal, DNSAddr: closedUDPPort(t), DNSRouted: true,
		},
	}
	cfg := config.Default()
	env := Env{
		Migrations: func(ctx context.Context) (MigrationLevel, error) {
			st, err := store.CheckMigrations(ctx, layout.DB())
			return MigrationLevel{Current: st.Current, Latest: st.Latest}, err
		},
		Layout:     layout,
		Config:     cfg,
		Daemon:     d,
		Version:    "v1",
		Commit:     "c1",
		Root:       root,
		GOARCH:     "amd64",
		UID:        os.Getuid(),
		SSHConfig:  filepath.Join(dir, "userhome", ".ssh", "config"),
		SSHInclude: filepath.Join(layout.State, "ssh", "config"),
		OpenRW:     openRW,
		LookPath: func(file string) (string, error) {
			if file == "firecracker" {
				return "", errors.New("not found")
			}
			return "/usr/sbin/" + file, nil
		},
		HostNets: func(context.Context) ([]network.HostNet, error) {
			return []network.HostNet{
				{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Dev: "eth0"},
				{Prefix: netip.MustParsePrefix("172.30.0.0/24"), Dev: "banger0"},
			}, nil
		},
		Statfs: func(string) (Space, error) { return Space{Free: 100 * gib, Total: 200 * gib, Dev: 1}, nil },
	}
	return env, d
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// one runs the check called name against env.
func one(t *testing.T, env Env, name string) Result {
	t.Helper()
	ctx := context.Background()
	f := gather(ctx, env)
	for _, c := range checks {
		if c.name == name {
			return runOne(ctx, f, c)
		}
	}
	t.Fatalf("no check %q", name)
	return Result{}
}

// expect fails the test unless r has status want and detail and fix
// contain the given strings.
func expect(t *testing.T, r Result, want Status, detail, fix string) {
	t.Helper()
	if r.Status != want || !strings.Contains(r.Detail, detail) || !strings.Contains(r.Fix, fix) {
		t.Errorf("%s = %s %q (fix %q)\nwant %s with %q (fix with %q)", r.Name, r.Status, r.Detail, r.Fix, want, detail, fix)
	}
	if want != Pass && want != Skip && r.Fix == "" {
		t.Errorf("%s: %s without a fix", r.Name, r.Status)
	}
	if strings.Contains(r.Detail+r.Fix, "\n") {
		t.Errorf("%s: detail or fix spans lines: %q %q", r.Name, r.Detail, r.Fix)
	}
}

func TestHealthyHost(t *testing.T) {
	env, _ := testEnv(t)
	rs := Run(context.Background(), env, false)
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
		switch r.Name {
		case "ssh-config", "state-store", "dns":
			// No Include, no store and no DNS server in this fake.
			if r.Status == Pass {
				t.Errorf("%s passed without what it checks: %+v", r.Name, r)
			}
		case "install-drift", "unit-hardening":
			expect(t, r, Skip, "not installed as a system service", "")
		default:
			expect(t, r, Pass, "", "")
		}
	}
	if !reflect.DeepEqual(names, Names()) {
		t.Errorf("Run reported %v, want Names() %v", names, Names())
	}
}

// Without a daemon, doctor still reports every check: the daemon check
// fails with the log to read, and checks that need its answers skip.
func TestNoDaemon(t *testing.T) {
	env, _ := testEnv(t)
	env.Daemon, env.DaemonErr = nil, errors.New("bangerd did not answer within 15s")
	rs := Run(context.Background(), env, false)
	if len(rs) != len(Names()) || !Failed(rs) {
		t.Fatalf("got %d results (failed %v), want %d with a failure", len(rs), Failed(rs), len(Names()))
	}
	by := map[string]Result{}
	for _, r := range rs {
		by[r.Name] = r
	}
	expect(t, by["daemon"], Fail, "did not answer within 15s", env.Layout.DaemonLog())
	for _, n := range []string{"engines", "network", "subnet", "dns", "dns-routing"} {
		expect(t, by[n], Skip, "did not answer within 15s", "")
	}
	expect(t, by["kvm"], Pass, "unknown", "")
	expect(t, by["architecture"], Pass, "amd64", "")
}

// --fix applies only safe fixes, runs those checks again and marks them.
func TestRunFix(t *testing.T) {
	env, _ := testEnv(t)
	os.Chmod(env.Layout.Runtime, 0o755)
	env.InstallSSH = func() error {
		writeFile(t, env.SSHInclude, "Host *.vm\n", 0o644)
		return installInclude(env.SSHConfig, env.SSHInclude)
	}
	byName := func(rs []Result) map[string]Result {
		m := map[string]Result{}
		for _, r := range rs {
			m[r.Name] = r
		}
		return m
	}
	before := byName(Run(context.Background(), env, false))
	expect(t, before["socket"], Fail, "mode 0755", "chmod 700 "+env.Layout.Runtime)
	expect(t, before["ssh-config"], Warn, "does not include", "banger ssh-config --install")
	if st, _ := os.Stat(env.Layout.Runtime); st.Mode().Perm() != 0o755 {
		t.Fatal("a run without --fix changed the runtime dir")
	}
	after := byName(Run(context.Background(), env, true))
	for _, n := range []string{"socket", "ssh-config"} {
		if r := after[n]; r.Status != Pass || !r.Fixed {
			t.Errorf("after --fix, %s = %+v, want a fixed pass", n, r)
		}
	}
	if r := after["architecture"]; r.Fixed {
		t.Error("a passing check is marked fixed")
	}
	if st, _ := os.Stat(env.Layout.Runtime); st.Mode().Perm() != 0o700 {
		t.Errorf("runtime dir mode %04o after --fix", st.Mode().Perm())
	}
}

func TestFixFailureIsReported(t *testing.T) {
	env, _ := testEnv(t)
	env.InstallSSH = func() error { return errors.New("disk full") }
	for _, r := range Run(context.Background(), env, true) {
		if r.Name == "ssh-config" {
			expect(t, r, Warn, "automatic fix failed: disk full", "banger ssh-config --install")
			if r.Fixed {
				t.Error("a failed fix is marked fixed")
			}
		}
	}
}

// The JSON form is a contract: exactly these keys.
func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Result{Name: "kvm", Status: Warn, Detail: "d", Fix: "f", autofix: func() error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"name":"kvm","status":"warn","detail":"d","fix":"f","fixed":false}`; got != want {
		t.Errorf("JSON %s\nwant %s", got, want)
	}
}

// vm-defaults: the default image and kernel exist, or can be had on first
// use; a name that is neither fails, naming what to do.
func TestVMDefaults(t *testing.T) {
	env, d := testEnv(t)
	expect(t, one(t, env, "vm-defaults"), Pass, "image debian-bookworm is built on first use (catalog); kernel debian-cloud is pulled on first use (catalog); 1 vCPU, 512 MiB, 4G disk", "")
	d.images, d.kernels = []api.Image{{Name: "dev"}}, []api.Kernel{{Name: "k6"}}
	env.Config.DefaultImage, env.Config.DefaultKernel = "dev", "k6"
	expect(t, one(t, env, "vm-defaults"), Pass, "image dev is here; kernel k6 is here", "")
	env.Config.DefaultImage = "127.0.0.1:5000/team/dev:1"
	expect(t, one(t, env, "vm-defaults"), Pass, "is pulled on first use", "")
	env.Config.DefaultImage, env.Config.DefaultKernel = "debian-bookwrom", "debian-clod"
	expect(t, one(t, env, "vm-defaults"), Fail, `default_image "debian-bookwrom" is neither`, "banger image list")
	if r := one(t, env, "vm-defaults"); !strings.Contains(r.Detail, `default_kernel "debian-clod"`) {
		t.Errorf("both named: %q", r.Detail)
	}
	d.err = errors.New("connection refused")
	expect(t, one(t, env, "vm-defaults"), Skip, "could not list images", "")
}
