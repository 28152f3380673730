package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/testutil"
)

// TestSystemInstallJailer: under a real systemd, system install with
// Firecracker's jailer lets the owner's daemon run jailed Firecracker VMs
// through the installed root helper, inside the helper unit's sandbox: the
// jail root's, Firecracker as the owner, exec working, the VM kept across
// system restart, the jail gone with the VM. Firecracker and the jailer are
// the test doubles (the jailer double skips the mount namespace and
// pivot_root, and its Firecracker runs QEMU under TCG, which needs a
// drop-in allowing writable-executable memory in the helper's unit).
func TestSystemInstallJailer(t *testing.T) {
	testutil.SkipShort(t, "boots a systemd container and a guest")
	c, fx := bootWithBanger(t)
	fcDir := filepath.Join(c.root, "srv", "banger-fc")
	if err := os.MkdirAll(fcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"firecracker", "jailer"} {
		if out, err := exec.Command("cp", filepath.Join(binDir, b), fcDir+"/").CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", b, err, out)
		}
	}
	fc, jailer := "/srv/banger-fc/firecracker", "/srv/banger-fc/jailer"
	c.ok(0, "chmod", "0755", "/srv/banger-fc", fc, jailer)
	c.ok(0, "useradd", "-m", "-u", strconv.Itoa(sdOwnerUID), "-U", sdOwner)
	conf := fmt.Sprintf("engine = \"firecracker\"\nfirecracker_bin = %q\njailer_bin = %q\njailer = true\n", fc, jailer)
	c.ok(sdOwnerUID, "sh", "-c", "mkdir -p ~/.config/banger && printf '%s' \"$1\" > ~/.config/banger/config.toml", "sh", conf)
	writeDropIn := func(unit, body string) {
		dir := filepath.Join(c.root, "etc/systemd/system", unit+".d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "test.conf"), []byte("[Service]\n"+body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeDropIn(install.DaemonUnitName, "Environment=BANGER_TEST_FIRECRACKER_DOUBLE=1")
	writeDropIn(install.HelperUnitName, "MemoryDenyWriteExecute=no")

	netBefore := c.hostLikeNet()
	if r := c.run(0, "/srv/banger-src/banger", "system", "install", "--owner", sdOwner, "--firecracker", fc); r.code != 2 || !strings.Contains(r.err, "--jailer") {
		t.Errorf("--firecracker without --jailer: exit %d %s; want a usage error", r.code, r.err)
	}
	out := c.ok(0, "/srv/banger-src/banger", "system", "install", "--owner", sdOwner, "--firecracker", fc, "--jailer", jailer)
	t.Logf("install: %s", out)
	if r := c.run(0, "systemd-analyze", "verify", install.HelperUnitName, install.DaemonUnitName); r.code != 0 || strings.TrimSpace(r.out+r.err) != "" {
		t.Fatalf("systemd-analyze verify: exit %d: %s%s", r.code, r.out, r.err)
	}
	sec := strings.TrimSpace(c.ok(0, "systemd-analyze", "security", "--no-pager", install.HelperUnitName))
	t.Logf("systemd-analyze security %s with the jailer: %s", install.HelperUnitName, sec[strings.LastIndex(sec, "\n")+1:])
	if exec := c.ok(0, "systemctl", "show", "--property=ExecStart", "--value", install.HelperUnitName); !strings.Contains(exec, "--jailer "+jailer) {
		t.Fatalf("helper's ExecStart %q: want --jailer %s", exec, jailer)
	}

	fx.importAs(c, sdOwnerUID)
	c.ok(sdOwnerUID, "banger", "vm", "run", "-d", "--name", "fc", "--image", "bb")
	var vm struct {
		ID, Engine string
		PID        int
	}
	testutilJSON(t, c.ok(sdOwnerUID, "banger", "vm", "show", "fc", "--json"), &vm)
	if vm.Engine != "firecracker" || vm.PID == 0 {
		t.Fatalf("vm: %+v", vm)
	}
	if out := c.ok(sdOwnerUID, "banger", "vm", "exec", "fc", "--", "echo", "jailed"); out != "jailed\n" {
		t.Errorf("exec: %q", out)
	}
	// As the container sees it: the process runs as the owner, from the
	// jailer's copy in a jail of root's.
	vmDir := filepath.Join("/home", sdOwner, ".local/state/banger/vms", vm.ID)
	jail := filepath.Join(vmDir, "jail/firecracker", vm.ID)
	if out := c.ok(0, "stat", "-c", "%u %a", filepath.Dir(jail), jail); out != "0 755\n0 755\n" {
		t.Errorf("jail directories: %q, want root's, 0755", out)
	}
	if out := c.ok(0, "sh", "-c", fmt.Sprintf("ps -o uid= -p $(pgrep -f -- '--id=%s' | head -1)", vm.ID)); strings.TrimSpace(out) != strconv.Itoa(sdOwnerUID) {
		t.Errorf("firecracker runs as uid %q, want the owner", out)
	}
	c.ok(0, "banger", "system", "restart")
	if out := c.ok(sdOwnerUID, "banger", "vm", "exec", "fc", "--", "echo", "again"); out != "again\n" {
		t.Errorf("exec after system restart: %q", out)
	}
	c.ok(sdOwnerUID, "banger", "vm", "delete", "-f", "fc")
	if r := c.run(0, "test", "-e", vmDir); r.code == 0 {
		t.Errorf("%s (with its jail) left after delete", vmDir)
	}
	if r := c.run(0, "sh", "-c", "ls /run/banger/jails"); strings.TrimSpace(r.out) != "" {
		t.Errorf("jail mounts left after delete: %q", r.out)
	}
	c.ok(0, "banger", "system", "uninstall")
	c.uninstalled(netBefore)
}
