package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirecrackerThroughDouble runs the VM suite's core through the
// Firecracker engine, with firecracker_bin pointing at a test double that
// speaks Firecracker's command line, API and hybrid-vsock protocol and
// boots the guest under QEMU (no Firecracker can be had here).
func TestFirecrackerThroughDouble(t *testing.T) {
	e := newVMEnvWith(t, "engine = \"firecracker\"\nfirecracker_bin = \""+filepath.Join(binDir, "firecracker")+"\"\njailer = false\n",
		"BANGER_TEST_FIRECRACKER_DOUBLE=1")

	var info struct {
		Default string
		Engines []struct {
			Name, Version string
			Available     bool
		}
	}
	testutilJSON(t, e.ok("engine", "--json"), &info)
	if info.Default != "firecracker" {
		t.Fatalf("engine: %+v", info)
	}

	r := e.run("vm", "run", "--rm", "--image", "bb", "--", "sh", "-c", "echo hi; exit 7")
	if r.code != 7 || r.out != "hi\n" {
		t.Fatalf("vm run through firecracker: %+v\ndaemon log:\n%s", r, e.daemonLog())
	}
	e.ok("vm", "run", "-d", "--name", "fc", "--image", "bb")
	defer e.run("vm", "delete", "-f", "fc")
	var v struct {
		Engine string
		PID    int
	}
	json.Unmarshal([]byte(e.ok("vm", "show", "fc", "--json")), &v)
	if v.Engine != "firecracker" {
		t.Errorf("vm engine %q", v.Engine)
	}
	// Stop data safety and persistence.
	for i := 0; i < 3; i++ {
		e.ok("vm", "exec", "fc", "--", "sh", "-c", "echo round >> /root/log")
		if out := e.ok("vm", "stop", "fc"); !strings.Contains(out, "synced") {
			t.Fatalf("stop: %q", out)
		}
		e.ok("vm", "start", "fc")
	}
	if out := e.ok("vm", "exec", "fc", "--", "wc", "-l", "/root/log"); !strings.HasPrefix(strings.TrimSpace(out), "3") {
		t.Errorf("after 3 stop/start rounds: %q", out)
	}
	// Restart survival: kill -9 the daemon; the next one re-attaches.
	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := e.ok("vm", "exec", "fc", "--", "cat", "/root/log"); strings.Count(out, "round") != 3 {
		t.Errorf("after daemon restart: %q", out)
	}
	if out := e.ok("vm", "stop", "fc"); !strings.Contains(out, "synced") {
		t.Errorf("stop after reattach: %q", out)
	}
}

// TestJailedFirecrackerThroughRootHelper: a daemon running as its owner
// (uid 65534) runs Firecracker under the jailer, which must start as root
// (the jailer double refuses otherwise): the root helper builds the jail,
// root's, in the VM's directory (the daemon and the helper in different
// mount namespaces, as systemd units are) and launches the jailer; the VM
// runs as the owner from the copy in its jail, with networking, survives
// a daemon restart, and the jail goes with the VM. Its shape's template is
// made under the jailer too, and sealed (testJailedTemplate).
func TestJailedFirecrackerThroughRootHelper(t *testing.T) {
	fc, jailer := filepath.Join(binDir, "firecracker"), filepath.Join(binDir, "jailer")
	n := newNetEnvAs(t, true, nil, netConfig{
		toml: "engine = \"firecracker\"\nfirecracker_bin = \"" + fc + "\"\njailer_bin = \"" + jailer + "\"\njailer = true\n",
		env:  []string{"BANGER_TEST_FIRECRACKER_DOUBLE=1"},
		helperArgs: func(home string) []string {
			return []string{"--jailer", jailer, "--firecracker", fc, "--vms", filepath.Join(home, "state", "vms"),
				"--templates", filepath.Join(home, "cache", "templates")}
		},
	})
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	defer n.run("vm", "delete", "-f", "web", "clone")
	var web struct {
		ID, Engine, IP string
		PID            int
	}
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	if web.Engine != "firecracker" || web.IP == "" {
		t.Fatalf("vm: %+v", web)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", web.PID))
	if err != nil || !strings.Contains(string(st), "Uid:\t65534\t65534\t65534") {
		t.Errorf("firecracker should run as the owner, 65534: %v\n%s", err, st)
	}
	vmDir := filepath.Join(n.home, "state", "vms", web.ID)
	jail := filepath.Join(vmDir, "jail", "firecracker", web.ID)
	for _, d := range []string{filepath.Dir(jail), jail} {
		if fi, err := os.Lstat(d); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: %v; want a directory only root can write", d, err)
		}
	}
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", web.PID))
	copyFi, cerr := os.Stat(filepath.Join(jail, "root", "firecracker"))
	if err != nil || cerr != nil || !os.SameFile(exe, copyFi) {
		t.Errorf("firecracker does not run from the jailer's copy in %s: %v, %v", jail, err, cerr)
	}
	if out := n.ok("vm", "exec", "web", "--", "echo", "jailed"); out != "jailed\n" {
		t.Errorf("exec: %q", out)
	}
	// Firecracker logs into a named pipe linked into its jail; the
	// owner's copier drains it into the capped log in the VM directory.
	if fi, err := os.Lstat(filepath.Join(jail, "root", "firecracker.log")); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
		t.Errorf("firecracker.log in the jail: %v; want a named pipe", err)
	}
	waitFirecrackerLog(t, vmDir)
	if got := n.fetch("web", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw 198.51.100.1:") {
		t.Errorf("jailed VM to the internet: %q", got)
	}
	if got := vmStartedFrom(t, n.env, "web"); got != "cold" {
		t.Errorf("first jailed VM started from %q, want cold", got)
	}
	// Before the restart below, which would end the template being made.
	testJailedTemplate(t, n)
	// The jailed VM outlives its daemon; the next one re-attaches.
	pid := n.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := n.ok("vm", "exec", "web", "--", "echo", "again"); out != "again\n" {
		t.Errorf("exec after a daemon restart: %q", out)
	}
	n.ok("vm", "delete", "-f", "web")
	if _, err := os.Stat(vmDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM directory %s (with its jail, root's) left after delete: %v", vmDir, err)
	}
}

// testJailedTemplate: the template of a jailed VM's shape (made in the
// background after the first one's cold boot) is made under the jailer and
// sealed by the root helper: its memory and state root's, mode 0444, which
// the owner (as whom every jailed Firecracker runs) cannot write. A second
// jailed VM starts from it, with hard links of those very files in its
// jail, runs as the owner, reaches the network, and writes only its own
// disk: the template's files hash the same after. The owner's daemon
// removes the sealed template.
func testJailedTemplate(t *testing.T, n *netEnv) {
	id := waitTemplate(t, n.env)
	tmpl := filepath.Join(n.home, "cache", "templates", id)
	files := []string{"memory", "snapshot"}
	sums := map[string]string{}
	for _, f := range files {
		p := filepath.Join(tmpl, f)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o444 {
			t.Errorf("template file %s is %d:%d %v, want sealed: root:root, 0444", p, st.Uid, st.Gid, fi.Mode().Perm())
		}
		if err := writeAsOwner(p); err == nil {
			t.Errorf("the owner (a jailed Firecracker's uid) can write template file %s", p)
		}
		sums[f] = sha(t, p)
	}
	n.ok("vm", "run", "-d", "--name", "clone", "--image", "bb")
	if got := vmStartedFrom(t, n.env, "clone"); got != "template "+id {
		t.Fatalf("jailed clone started from %q, want template %s", got, id)
	}
	var c struct {
		ID  string
		PID int
	}
	testutilJSON(t, n.ok("vm", "show", "clone", "--json"), &c)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.PID))
	if err != nil || !strings.Contains(string(st), "Uid:\t65534\t65534\t65534") {
		t.Errorf("the clone's firecracker should run as the owner, 65534: %v\n%s", err, st)
	}
	root := filepath.Join(n.home, "state", "vms", c.ID, "jail", "firecracker", c.ID, "root")
	for _, f := range files {
		inJail, err := os.Stat(filepath.Join(root, f))
		orig, oerr := os.Stat(filepath.Join(tmpl, f))
		if err != nil || oerr != nil || !os.SameFile(inJail, orig) {
			t.Errorf("the clone's jail has no hard link of the template's %s: %v, %v", f, err, oerr)
		}
		if err := writeAsOwner(filepath.Join(root, f)); err == nil {
			t.Errorf("the owner can write the template's %s through the clone's jail", f)
		}
	}
	if out := n.ok("vm", "exec", "clone", "--", "sh", "-c", "hostname; echo mine > /root/clone-only; sync"); out != "clone\n" {
		t.Errorf("clone: %q", out)
	}
	if r := n.run("vm", "exec", "web", "--", "cat", "/root/clone-only"); r.code == 0 {
		t.Errorf("web sees the clone's write: %q", r.out)
	}
	if got := n.fetch("clone", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw 198.51.100.1:") {
		t.Errorf("jailed clone to the internet: %q", got)
	}
	n.ok("vm", "delete", "-f", "clone")
	for _, f := range files {
		if got := sha(t, filepath.Join(tmpl, f)); got != sums[f] {
			t.Errorf("template file %s changed while a clone ran", f)
		}
	}
	n.ok("template", "rm", id)
	if _, err := os.Stat(tmpl); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sealed template %s left after template rm: %v", tmpl, err)
	}
}

// writeAsOwner tries to open p for writing as uid 65534.
func writeAsOwner(p string) error {
	cmd := exec.Command("sh", "-c", `exec 3>>"$1"`, "sh", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd.Run()
}

// waitFirecrackerLog waits until the capped Firecracker log in vmDir,
// which a copier fills from Firecracker's log pipe, holds the double's
// start message, and checks it is a regular file.
func waitFirecrackerLog(t *testing.T, vmDir string) {
	t.Helper()
	p := filepath.Join(vmDir, "firecracker.log")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "Successfully started microvm") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, not Firecracker's start message", p, b)
		}
	}
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("%s: %v; want a regular file", p, err)
	}
}
