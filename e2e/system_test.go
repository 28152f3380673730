package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/testutil"
)

// sdContainer is a container whose PID 1 is a real systemd, booted with
// systemd-nspawn on an overlay of the host's root (every host package is
// there; writes go to the overlay's upper layer) in a network namespace
// of its own. See ../shared/notes/real-systemd-here.md.
type sdContainer struct {
	t    *testing.T
	dir  string // upper, work, root, console.log
	root string // the container's root, as the host sees it
	pid  int    // the container's systemd, as the host sees it
}

// bootSystemd boots a container; prepare puts files into its root first.
// Everything it started and mounted is undone by t.Cleanup, also when
// the test fails half-way.
func bootSystemd(t *testing.T, prepare func(root string)) *sdContainer {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "systemd-nspawn", "systemd-container")
	testutil.RequireTool(t, "nsenter", "util-linux")
	// systemd marks a container it runs in with this file. systemd-nspawn
	// cannot boot a container inside one here (.ci/test-installed runs the
	// suite in one): it finds no cgroup to delegate.
	if b, err := os.ReadFile("/run/systemd/container"); err == nil {
		testutil.NotApplicable(t, "inside a %s container: systemd-nspawn cannot nest", strings.TrimSpace(string(b)))
	}
	dir, err := os.MkdirTemp("/var/tmp", "banger-sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &sdContainer{t: t, dir: dir, root: filepath.Join(dir, "root")}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", dir, dir)
	if err := unix.Mount("overlay", c.root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay of / on %s: %v", c.root, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(c.root, 0); err != nil {
			t.Errorf("unmount %s: %v", c.root, err)
			unix.Unmount(c.root, unix.MNT_DETACH)
		}
	})
	prepare(c.root)
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	// --register=no --keep-unit: there is no machined or host systemd
	// to register with.
	nspawn := exec.Command("systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network", "-D", c.root, "-b")
	nspawn.Stdout, nspawn.Stderr = console, console
	if err := nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { nspawn.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM to nspawn powers the container off; only if that
		// hangs, kill nspawn, which takes the container's processes
		// with it (they live in its pid namespace).
		nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("systemd-nspawn did not power off within 60s: killed")
			nspawn.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
			t.Logf("container console (tail):\n%s", tail(b, 3000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for c.pid == 0 {
		c.pid = findDescendant(nspawn.Process.Pid, "systemd")
		if c.pid == 0 {
			select {
			case <-exited:
				t.Fatal("systemd-nspawn exited before booting the container")
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("no systemd in the container after 60s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Until systemd has set up its bus, systemctl cannot ask it even to
	// wait.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		r := runCmd(t, exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.pid), "-a", "systemctl", "is-system-running", "--wait"))
		cancel()
		s := strings.TrimSpace(r.out)
		if s == "running" || s == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container's systemd: %q %s", s, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

// findDescendant returns the pid of a child or grandchild of pid named
// comm, or 0.
func findDescendant(pid int, comm string) int {
	children := func(p int) []int {
		var out []int
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, s := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(s); err == nil {
					out = append(out, n)
				}
			}
		}
		return out
	}
	for _, c := range children(pid) {
		for _, p := range append([]int{c}, children(c)...) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.TrimSpace(string(b)) == comm {
				return p
			}
		}
	}
	return 0
}

// run runs argv inside the container, as root or (uid > 0) as that user
// with no sudo, in a clean environment.
func (c *sdContainer) run(uid int, argv ...string) result {
	c.t.Helper()
	args := []string{"-t", strconv.Itoa(c.pid), "-a"}
	env := []string{"env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	if uid > 0 {
		args = append(args, "setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--init-groups")
		env = append(env, "HOME=/home/"+sdOwner, "USER="+sdOwner)
	} else {
		env = append(env, "HOME=/root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return runCmd(c.t, exec.CommandContext(ctx, "nsenter", append(append(args, env...), argv...)...))
}

// ok is run, failing the test unless argv exits 0; the journal of both
// units goes into the failure.
// sameVM returns a check that VM, running now, is still the same engine
// process after something (a restart, an update) and still runs commands.
func (c *sdContainer) sameVM(t *testing.T, uid int, vm string) (check func(after string)) {
	t.Helper()
	pidOf := func() int {
		var v struct{ PID int }
		testutilJSON(t, c.ok(uid, "banger", "vm", "show", vm, "--json"), &v)
		return v.PID
	}
	before := pidOf()
	return func(after string) {
		t.Helper()
		if out := c.ok(uid, "banger", "vm", "exec", vm, "--", "echo", "still-here"); strings.TrimSpace(out) != "still-here" {
			t.Fatalf("exec after %s: %q", after, out)
		}
		if pid := pidOf(); pid != before || before == 0 {
			t.Fatalf("VM engine pid %d before %s, %d after: want the same process", before, after, pid)
		}
	}
}

func (c *sdContainer) ok(uid int, argv ...string) string {
	c.t.Helper()
	r := c.run(uid, argv...)
	if r.code != 0 {
		j := c.run(0, "journalctl", "--no-pager", "-n", "60", "-u", install.DaemonUnitName, "-u", install.HelperUnitName)
		log, _ := os.ReadFile(filepath.Join(c.root, "home", sdOwner, ".local/state/banger/bangerd.log"))
		c.t.Fatalf("%s (uid %d): exit %d\nstdout: %s\nstderr: %s\njournal:\n%s\nbangerd.log (tail):\n%s", strings.Join(argv, " "), uid, r.code, r.out, r.err, j.out, tail(log, 3000))
	}
	return r.out
}

const (
	sdOwner    = "bangerowner"
	sdOwnerUID = 1500
)

// TestSystemInstall: under a real systemd, system install for an owner
// gives two active, verified units; the owner runs VMs with no sudo
// (networked, through the hardened root helper); system restart and
// kill -9 of the daemon keep a running VM running and usable; doctor's
// install checks pass; uninstall refuses while it runs, with the daemon
// answering and with it stopped (the engine outlives it), then with
// --force (which starts the daemon to stop the VM) leaves no banger unit
// or binary and the network as before install (links, iptables,
// nftables, forwarding); installing again
// works and finds the owner's data; daemon status|logs|restart are the
// system commands' aliases; uninstall --purge with the daemon stopped
// undoes the network all the same and removes the owner's banger data.
func TestSystemInstall(t *testing.T) {
	testutil.SkipShort(t, "boots a systemd container and guests")
	c, fx := bootWithBanger(t)
	c.ok(0, "useradd", "-m", "-u", strconv.Itoa(sdOwnerUID), "-U", sdOwner)

	netBefore := c.hostLikeNet()

	c.ok(0, "/srv/banger-src/banger", "system", "install", "--owner", sdOwner)
	if out := c.ok(0, "systemctl", "is-active", install.HelperUnitName, install.DaemonUnitName); out != "active\nactive\n" {
		t.Fatalf("units: %q, want both active", out)
	}
	if r := c.run(0, "systemd-analyze", "verify", install.HelperUnitName, install.DaemonUnitName); r.code != 0 || strings.TrimSpace(r.out+r.err) != "" {
		t.Fatalf("systemd-analyze verify: exit %d: %s%s", r.code, r.out, r.err)
	}
	for _, u := range []string{install.HelperUnitName, install.DaemonUnitName} {
		out := strings.TrimSpace(c.ok(0, "systemd-analyze", "security", "--no-pager", u))
		t.Logf("systemd-analyze security %s: %s", u, out[strings.LastIndex(out, "\n")+1:])
	}
	var st install.Status
	testutilJSON(t, c.ok(sdOwnerUID, "banger", "system", "status", "--json"), &st)
	if len(st.Units) != 2 || st.Units[0].ActiveState != "active" || st.Units[1].ActiveState != "active" || !st.Units[0].Current || !st.Units[1].Current ||
		st.Daemon == nil || !st.HelperAnswering || len(st.Drift) != 0 || st.Install == nil || st.Install.Owner.UID != sdOwnerUID {
		t.Fatalf("system status: %+v", st)
	}

	// The owner, no sudo.
	fx.importAs(c, sdOwnerUID)
	c.ok(sdOwnerUID, "banger", "vm", "run", "--rm", "--image", "bb", "--", "true")
	c.ok(sdOwnerUID, "banger", "vm", "run", "-d", "--name", "keep", "--image", "bb")

	// BANGER_HOME wins over the install, as tests and development on an
	// installed host need: a daemon of its own, not the owner's images.
	dev := []string{"env", "BANGER_HOME=/var/tmp/banger-dev", "BANGER_NETWORK=off", "banger"}
	if out := c.ok(0, append(dev, "image", "list", "--json")...); strings.TrimSpace(out) != "[]" {
		t.Errorf("image list with BANGER_HOME on an installed host: %q, want a daemon of its own with no images", out)
	}
	c.ok(0, append(dev, "daemon", "stop")...)
	stillRunning := c.sameVM(t, sdOwnerUID, "keep")
	c.ok(0, "banger", "system", "restart")
	stillRunning("system restart")

	// kill -9 of the daemon: systemd starts another, which re-attaches.
	daemonPID := func() string {
		return strings.TrimSpace(c.ok(0, "systemctl", "show", "--property=MainPID", "--value", install.DaemonUnitName))
	}
	killed := daemonPID()
	c.ok(0, "kill", "-9", killed)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if pid := daemonPID(); pid != killed && pid != "0" && c.run(sdOwnerUID, "banger", "system", "status").code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bangerd not back 90s after kill -9: %s", c.run(sdOwnerUID, "banger", "system", "status").out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	stillRunning("kill -9 of bangerd")

	var checks []struct{ Name, Status, Detail string }
	testutilJSON(t, c.run(sdOwnerUID, "banger", "doctor", "--json").out, &checks)
	for _, ch := range checks {
		if (ch.Name == "install-drift" || ch.Name == "unit-hardening") && ch.Status != "pass" {
			t.Errorf("doctor %s: %s %s", ch.Name, ch.Status, ch.Detail)
		}
	}

	// Root's CLI talks to the owner's daemon too.
	if out := c.ok(0, "banger", "vm", "list"); !strings.Contains(out, "keep") {
		t.Fatalf("root's vm list: %q, want the owner's VM", out)
	}
	if r := c.run(0, "banger", "system", "uninstall"); r.code == 0 || !strings.Contains(r.err, "running") {
		t.Fatalf("uninstall with a VM running: exit %d %s %s; want a refusal", r.code, r.out, r.err)
	}
	// The daemon stopped: the VM's engine outlives it (KillMode=process),
	// and uninstall still sees it, refuses, and with --force starts the
	// daemon to stop it cleanly.
	c.ok(0, "systemctl", "stop", install.DaemonUnitName)
	if r := c.run(0, "banger", "system", "uninstall"); r.code == 0 || !strings.Contains(r.err, "keep") || !strings.Contains(r.err, "--force") {
		t.Fatalf("uninstall with the daemon stopped and a VM running: exit %d %s %s; want a refusal naming keep", r.code, r.out, r.err)
	}
	if _, err := os.Stat(filepath.Join(c.root, "usr/local/bin/bangerd")); err != nil {
		t.Fatalf("a refused uninstall removed bangerd: %v", err)
	}
	r := c.run(0, "banger", "system", "uninstall", "--force")
	if r.code != 0 {
		t.Fatalf("uninstall --force with the daemon stopped: exit %d %s %s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.err, "starting it") || !strings.Contains(r.err, "stopping keep") {
		t.Errorf("uninstall --force with the daemon stopped does not say it started the daemon to stop keep: %q", r.err)
	}
	if !strings.Contains(r.out, "/home/"+sdOwner+"/.local/state/banger") {
		t.Fatalf("uninstall does not say where the owner's data is: %q", r.out)
	}
	c.uninstalled(netBefore)

	c.ok(0, "/srv/banger-src/banger", "system", "install", "--owner", sdOwner)
	if out := c.ok(sdOwnerUID, "banger", "image", "list"); !strings.Contains(out, "bb") {
		t.Fatalf("the owner's image is gone after reinstall: %q", out)
	}
	c.ok(sdOwnerUID, "banger", "vm", "run", "--rm", "--image", "bb", "--", "true")

	// The VM uninstall stopped is the owner's data too: it starts again.
	// Installing again, from the installed banger itself, upgrades in
	// place; the running VM keeps running.
	c.ok(sdOwnerUID, "banger", "vm", "start", "keep")
	stillRunning = c.sameVM(t, sdOwnerUID, "keep")
	c.ok(0, "banger", "system", "install", "--owner", sdOwner)
	stillRunning("installing again")

	// daemon status|logs|restart are aliases of the system commands.
	c.ok(0, "banger", "daemon", "restart")
	stillRunning("daemon restart")
	if out := c.ok(sdOwnerUID, "banger", "daemon", "status"); !strings.Contains(out, "for "+sdOwner) || !strings.Contains(out, install.HelperUnitName) {
		t.Errorf("daemon status when installed: %q, want system status", out)
	}
	if out := c.ok(sdOwnerUID, "banger", "daemon", "logs", "-n", "3"); strings.Count(out, "\n") != 3 {
		t.Errorf("daemon logs -n 3: %q", out)
	}
	c.ok(sdOwnerUID, "banger", "vm", "delete", "-f", "keep")

	// Uninstall with the daemon stopped: the network is undone from the
	// root helper's record. --purge removes the owner's banger data and
	// nothing else of theirs.
	c.ok(sdOwnerUID, "touch", "/home/"+sdOwner+"/.local/state/not-bangers")
	c.ok(0, "systemctl", "stop", install.DaemonUnitName)
	if out := c.ok(0, "banger", "system", "uninstall", "--purge"); strings.Contains(out, "kept") {
		t.Errorf("uninstall --purge says data is kept: %q", out)
	}
	c.uninstalled(netBefore)
	for _, d := range []string{".config/banger", ".local/state/banger", ".cache/banger"} {
		if _, err := os.Lstat(filepath.Join(c.root, "home", sdOwner, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("~%s/%s left after --purge (%v)", sdOwner, d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.root, "home", sdOwner, ".local/state/not-bangers")); err != nil {
		t.Errorf("--purge removed the owner's other files: %v", err)
	}
}

// uninstalled checks that no banger unit, binary or /etc/banger is left,
// no engine process runs, and the network is as netBefore.
func (c *sdContainer) uninstalled(netBefore string) {
	t := c.t
	t.Helper()
	for _, p := range []string{"/usr/local/bin/banger", "/usr/local/bin/bangerd", "/usr/local/lib/banger", "/etc/banger", "/run/banger", "/run/bangerd",
		"/etc/systemd/system/" + install.DaemonUnitName, "/etc/systemd/system/" + install.HelperUnitName} {
		if _, err := os.Lstat(filepath.Join(c.root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after uninstall (%v)", p, err)
		}
	}
	for _, u := range []string{install.DaemonUnitName, install.HelperUnitName} {
		if out := c.ok(0, "systemctl", "show", "--property=LoadState", "--value", u); strings.TrimSpace(out) != "not-found" {
			t.Errorf("%s after uninstall: LoadState %q", u, out)
		}
	}
	if r := c.run(0, "pgrep", "-x", "qemu-system-x86"); r.code == 0 {
		t.Errorf("engine processes left after uninstall: %s", r.out)
	}
	if after := c.netState(); after != netBefore {
		t.Errorf("network after uninstall differs from before install:\n%s\nbefore:\n%s", after, netBefore)
	}
}

// sdFixtures are the kernel and image files put into the container.
type sdFixtures struct{ vmlinux, initrd, rootfs string }

// bootWithBanger boots a container holding the built binaries in
// /srv/banger-src and the shared VM env's kernel and busybox image in
// /srv/banger-fixtures.
func bootWithBanger(t *testing.T) (*sdContainer, sdFixtures) {
	t.Helper()
	shared := sharedVMEnv(t)
	var k struct{ Vmlinux, Initrd string }
	testutilJSON(t, shared.ok("kernel", "show", "debian-cloud", "--json"), &k)
	c := bootSystemd(t, func(root string) {
		hideHostInstall(t, root)
		for dir, files := range map[string][]string{
			"srv/banger-src":      {filepath.Join(binDir, "banger"), filepath.Join(binDir, "bangerd"), filepath.Join(binDir, "banger-agent")},
			"srv/banger-fixtures": {k.Vmlinux, k.Initrd, shared.rootfs},
		} {
			dst := filepath.Join(root, dir)
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{"--sparse=always", "--no-preserve=ownership"}, files...), dst+"/")
			if out, err := exec.Command("cp", args...).CombinedOutput(); err != nil {
				t.Fatalf("cp %v: %v %s", files, err, out)
			}
		}
	})
	c.ok(0, "chmod", "-R", "a+rX", "/srv/banger-src", "/srv/banger-fixtures")
	for _, u := range []string{install.DaemonUnitName, install.HelperUnitName} {
		if out := c.ok(0, "systemctl", "show", "--property=LoadState", "--value", u); strings.TrimSpace(out) != "not-found" {
			t.Fatalf("%s in the fresh container: LoadState %q, want none (the host's install leaked in)", u, out)
		}
	}
	f := "/srv/banger-fixtures/"
	return c, sdFixtures{vmlinux: f + filepath.Base(k.Vmlinux), initrd: f + filepath.Base(k.Initrd), rootfs: f + filepath.Base(shared.rootfs)}
}

// hideHostInstall hides a system install of banger on the host from a
// container whose root is an overlay of the host's: its units would
// start at boot. Whiteouts in the overlay only.
func hideHostInstall(t *testing.T, root string) {
	t.Helper()
	p := install.DefaultPaths()
	for _, f := range []string{p.CLI, p.Daemon, filepath.Dir(p.Agent), p.ConfigDir, p.DaemonUnit(), p.HelperUnit(),
		filepath.Join(p.UnitDir, "multi-user.target.wants", install.DaemonUnitName), filepath.Join(p.UnitDir, "multi-user.target.wants", install.HelperUnitName)} {
		if err := os.RemoveAll(filepath.Join(root, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// importAs imports the kernel as debian-cloud and registers the image as
// bb, as uid.
func (fx sdFixtures) importAs(c *sdContainer, uid int) {
	c.ok(uid, "banger", "kernel", "import", fx.vmlinux, "--initrd", fx.initrd, "--name", "debian-cloud")
	c.ok(uid, "banger", "image", "register", "--name", "bb", "--rootfs", fx.rootfs, "--kernel", "debian-cloud")
}

// TestSystemInstallForRoot: on a machine without sudo, install for root
// (--owner root). The daemon's unit keeps no capability, so even as root
// it asks the helper, and networked VMs work.
func TestSystemInstallForRoot(t *testing.T) {
	testutil.SkipShort(t, "boots a systemd container and a guest")
	c, fx := bootWithBanger(t)
	if r := c.run(0, "/srv/banger-src/banger", "system", "install"); r.code != 2 || !strings.Contains(r.err, "--owner root") {
		t.Fatalf("install as root without --owner: exit %d %s; want a usage error naming --owner root", r.code, r.err)
	}
	c.ok(0, "/srv/banger-src/banger", "system", "install", "--owner", "root")
	fx.importAs(c, 0)
	c.ok(0, "banger", "vm", "run", "--rm", "--image", "bb", "--", "true")
	var checks []struct{ Name, Status, Detail string }
	testutilJSON(t, c.run(0, "banger", "doctor", "--json").out, &checks)
	for _, ch := range checks {
		if ch.Name == "network" && (ch.Status != "pass" || !strings.Contains(ch.Detail, "through the root helper")) {
			t.Errorf("doctor network: %s %s; want a pass through the root helper", ch.Status, ch.Detail)
		}
	}
}

// hostLikeNet sets the container's network up as a host that never
// routed but ran iptables, and returns its netState: forwarding off
// (banger turns it on and uninstall must turn it off again), and the
// chains banger jumps from present (uninstall leaves iptables' own tables
// and chains alone: another tool may have made or use them).
func (c *sdContainer) hostLikeNet() string {
	c.ok(0, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	for _, argv := range [][]string{{"-P", "INPUT", "ACCEPT"}, {"-P", "FORWARD", "ACCEPT"}, {"-t", "nat", "-P", "POSTROUTING", "ACCEPT"}} {
		c.ok(0, append([]string{"iptables"}, argv...)...)
	}
	return c.netState()
}

// counters are iptables-save's packet and byte counts.
var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// netState is what banger may change on the host's network: links,
// iptables rules and policies, the nftables ruleset and IPv4 forwarding.
func (c *sdContainer) netState() string {
	c.t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{{"ip", "-o", "link"}, {"iptables-save"}, {"nft", "list", "ruleset"}, {"sysctl", "net.ipv4.ip_forward"}} {
		fmt.Fprintf(&b, "$ %s\n", strings.Join(argv, " "))
		for _, line := range strings.Split(c.ok(0, argv...), "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "[]") + "\n")
			}
		}
	}
	return b.String()
}
