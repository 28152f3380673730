package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/testutil"
)

func TestArchitecture(t *testing.T) {
	env, _ := testEnv(t)
	for _, arch := range []string{"amd64", "arm64"} {
		env.GOARCH = arch
		expect(t, one(t, env, "architecture"), Pass, "linux/"+arch, "")
	}
	env.GOARCH = "riscv64"
	expect(t, one(t, env, "architecture"), Fail, "riscv64 is not supported", "amd64")
}

func TestKVM(t *testing.T) {
	const pvm = "KVM unusable: /dev/kvm is PVM-only (kvm_pvm loaded, no vmx/svm in the host CPU flags); using TCG software emulation (slow)"
	t.Run("usable", func(t *testing.T) {
		env, _ := testEnv(t)
		expect(t, one(t, env, "kvm"), Pass, "QEMU uses KVM", "")
	})
	t.Run("missing", func(t *testing.T) {
		env, _ := testEnv(t)
		os.Remove(filepath.Join(env.Root, "dev", "kvm"))
		expect(t, one(t, env, "kvm"), Warn, "no /dev/kvm", "modprobe kvm_intel")
	})
	t.Run("not yours", func(t *testing.T) {
		env, _ := testEnv(t)
		env.OpenRW = func(p string) error { return &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission} }
		expect(t, one(t, env, "kvm"), Warn, "not read-write for you", "usermod -aG kvm")
	})
	// /dev/kvm root:root 0600, as on this machine: no group to join, so
	// doctor says how to make one, or to keep TCG; for an install, in the
	// owner's name, also when root runs doctor (root opens it, the
	// owner's daemon cannot).
	t.Run("root-only", func(t *testing.T) {
		testutil.RequireRoot(t)
		env, _ := testEnv(t)
		kvm := filepath.Join(env.Root, "dev", "kvm")
		if err := os.Chown(kvm, 0, 0); err != nil {
			t.Fatal(err)
		}
		env.UID = 1000
		env.OpenRW = func(p string) error { return &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission} }
		r := one(t, env, "kvm")
		expect(t, r, Warn, "root-only", "udev/rules.d")
		expect(t, r, Warn, "uid 1000", "usermod -aG kvm")
		expect(t, r, Warn, "TCG", "keep TCG")

		env.UID, env.OpenRW = 0, openRW
		rec := install.Record{Owner: install.Owner{UID: 1500, Name: "alice"}}
		env.Install = &install.Status{Install: &rec}
		r = one(t, env, "kvm")
		expect(t, r, Warn, "runs as alice", "sudo banger system install")

		rec.Owner = install.Owner{UID: 0, Name: "root"}
		expect(t, one(t, env, "kvm"), Pass, "QEMU uses KVM", "")
		os.Chmod(kvm, 0o660)
		env.Install = nil
		env.UID = 1000
		expect(t, one(t, env, "kvm"), Pass, "QEMU uses KVM", "")
	})
	t.Run("opens but the engine cannot use it", func(t *testing.T) {
		env, d := testEnv(t)
		d.engine.Engines[1].Accel, d.engine.Engines[1].Note = "tcg", pvm
		expect(t, one(t, env, "kvm"), Warn, "QEMU uses tcg: "+pvm, "nested virtualization")
	})
	t.Run("daemon down", func(t *testing.T) {
		env, _ := testEnv(t)
		env.Daemon, env.DaemonErr = nil, errors.New("down")
		expect(t, one(t, env, "kvm"), Pass, "unknown", "")
	})
}

func TestEngines(t *testing.T) {
	t.Run("qemu", func(t *testing.T) {
		env, _ := testEnv(t)
		r := one(t, env, "engines")
		expect(t, r, Pass, "new VMs get qemu (Firecracker unavailable", "")
		expect(t, r, Pass, "; firecracker unavailable; qemu 7.2.22 (kvm)", "")
	})
	t.Run("firecracker", func(t *testing.T) {
		env, d := testEnv(t)
		d.engine = api.EngineInfo{Default: "firecracker", Reason: "Firecracker found and KVM usable", Engines: []api.EngineStatus{
			{Name: "firecracker", Available: true, Version: "1.10.1", Accel: "kvm"},
			{Name: "qemu", Available: true, Version: "7.2.22", Accel: "kvm"},
		}}
		expect(t, one(t, env, "engines"), Pass, "new VMs get firecracker (Firecracker found and KVM usable); firecracker 1.10.1 (kvm); qemu 7.2.22", "")
	})
	t.Run("firecracker installed but too old", func(t *testing.T) {
		env, d := testEnv(t)
		env.LookPath = func(file string) (string, error) { return "/usr/bin/" + file, nil }
		const old = "firecracker v1.7.0 is too old: banger needs v1.8.0 or newer"
		d.engine.Reason = "Firecracker unavailable (" + old + ")"
		d.engine.Engines[0].Note, d.engine.Engines[0].Version = old, "1.7.0"
		expect(t, one(t, env, "engines"), Warn, "too old", "Firecracker ≥ 1.8")
	})
	t.Run("default engine missing", func(t *testing.T) {
		env, d := testEnv(t)
		d.engine.Engines[1] = api.EngineStatus{Name: "qemu", Note: "qemu-system-x86_64 not found"}
		expect(t, one(t, env, "engines"), Fail, "new VMs get qemu, which cannot run: qemu-system-x86_64 not found", "apt-get install qemu-system-x86")
	})
	t.Run("configured engine unavailable", func(t *testing.T) {
		env, d := testEnv(t)
		env.Config.Engine = "firecracker"
		d.engine.Default, d.engine.Reason = "", ""
		expect(t, one(t, env, "engines"), Fail, "config engine = firecracker cannot run here", "remove engine from")
	})
	t.Run("daemon down", func(t *testing.T) {
		env, _ := testEnv(t)
		env.Daemon, env.DaemonErr = nil, errors.New("down")
		expect(t, one(t, env, "engines"), Skip, "needs the daemon", "")
	})
}

// vhost-vsock is never a problem: both engines do without it.
func TestVhostVsock(t *testing.T) {
	env, _ := testEnv(t)
	expect(t, one(t, env, "vhost-vsock"), Pass, "absent, and not needed", "")
	writeFile(t, filepath.Join(env.Root, "dev", "vhost-vsock"), "", 0o600)
	expect(t, one(t, env, "vhost-vsock"), Pass, "present", "")
}

func TestTun(t *testing.T) {
	env, d := testEnv(t)
	expect(t, one(t, env, "tun"), Pass, "present", "")
	os.Remove(filepath.Join(env.Root, "dev", "net", "tun"))
	expect(t, one(t, env, "tun"), Fail, "cannot get a tap", "modprobe tun")
	d.net = api.NetworkInfo{Reason: "host networking is off: network = false in config.toml"}
	expect(t, one(t, env, "tun"), Skip, "it is off", "")
	// Without the daemon, the config says whether networking is wanted.
	env.Daemon, env.DaemonErr = nil, errors.New("down")
	env.Config.Network = true
	expect(t, one(t, env, "tun"), Fail, "absent", "modprobe tun")
}

func TestConfigCheck(t *testing.T) {
	env, _ := testEnv(t)
	expect(t, one(t, env, "config"), Pass, "built-in defaults", "")
	writeFile(t, env.Layout.ConfigFile(), "bridge = \"banger0\"\n", 0o600)
	expect(t, one(t, env, "config"), Pass, "read", "")
	env.ConfigErr = fmt.Errorf("config %s: unknown key \"brige\" (line 1)", env.Layout.ConfigFile())
	expect(t, one(t, env, "config"), Fail, `unknown key "brige"`, env.Layout.ConfigFile())
}
