package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// vmStartedFrom returns vm show's startedFrom for name.
func vmStartedFrom(t *testing.T, e *env, name string) string {
	t.Helper()
	var v struct{ StartedFrom string }
	if err := json.Unmarshal([]byte(e.ok("vm", "show", name, "--json")), &v); err != nil {
		t.Fatal(err)
	}
	return v.StartedFrom
}

// waitTemplate waits for the template the first cold boot makes in the
// background and returns its id.
func waitTemplate(t *testing.T, e *env) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var ts []struct{ ID string }
		if err := json.Unmarshal([]byte(e.ok("template", "list", "--json")), &ts); err != nil {
			t.Fatal(err)
		}
		if len(ts) == 1 {
			return ts[0].ID
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no template was made after the first cold boot\n%s", e.daemonLog())
	return ""
}

// TestTemplateClones: the first cold boot of a shape makes a template;
// VMs of that shape then start from it, each with its own identity
// (hostname, kernel random stream), with stop/start keeping their disk and
// writes invisible to each other; --cold boots cold; a corrupt template
// falls back to a cold boot and is discarded.
func TestTemplateClones(t *testing.T) {
	testTemplateClones(t, newVMEnvWith(t, ""), "state")
}

// TestTemplateClonesFirecracker is TestTemplateClones through the
// Firecracker engine and its test double: templates are Firecracker
// snapshots (PUT /snapshot/create), clones restore them (PUT
// /snapshot/load), the double doing both with QEMU migration.
func TestTemplateClonesFirecracker(t *testing.T) {
	e := newVMEnvWith(t, "engine = \"firecracker\"\nfirecracker_bin = \""+filepath.Join(binDir, "firecracker")+"\"\njailer = false\n",
		"BANGER_TEST_FIRECRACKER_DOUBLE=1")
	testTemplateClones(t, e, "snapshot")
}

// testTemplateClones runs TestTemplateClones in e; stateFile is the name
// of the engine's device state file in a template.
func testTemplateClones(t *testing.T, e *env, stateFile string) {
	e.ok("vm", "run", "-d", "--name", "first", "--image", "bb")
	defer e.run("vm", "delete", "-f", "first", "c1", "c2", "c3", "c4")
	if got := vmStartedFrom(t, e, "first"); got != "cold" {
		t.Errorf("first VM started from %q, want cold", got)
	}
	id := waitTemplate(t, e)
	e.ok("vm", "delete", "-f", "first")

	e.ok("vm", "run", "-d", "--name", "c1", "--image", "bb")
	e.ok("vm", "run", "-d", "--name", "c2", "--image", "bb")
	type ident struct{ host, uuid, random string }
	idents := map[string]ident{}
	for _, vm := range []string{"c1", "c2"} {
		if got := vmStartedFrom(t, e, vm); got != "template "+id {
			t.Errorf("%s started from %q, want template %s", vm, got, id)
		}
		out := e.ok("vm", "exec", vm, "--", "sh", "-c", "hostname; cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1")
		f := strings.SplitN(strings.TrimSpace(out), "\n", 3)
		if len(f) != 3 {
			t.Fatalf("%s identity output %q", vm, out)
		}
		idents[vm] = ident{f[0], f[1], f[2]}
	}
	a, b := idents["c1"], idents["c2"]
	if a.host != "c1" || b.host != "c2" {
		t.Errorf("hostnames %q and %q, want c1 and c2", a.host, b.host)
	}
	if a.uuid == b.uuid || a.random == b.random {
		t.Errorf("two clones share their kernel's random stream: %+v %+v", a, b)
	}

	// A clone's disk is its own, and a synced stop keeps what it wrote.
	e.ok("vm", "exec", "c1", "--", "sh", "-c", "echo mine > /root/c1-only")
	if r := e.run("vm", "exec", "c2", "--", "cat", "/root/c1-only"); r.code == 0 {
		t.Errorf("c2 sees c1's write: %q", r.out)
	}
	if out := e.ok("vm", "stop", "c1"); !strings.Contains(out, "synced") {
		t.Errorf("stop c1: %q", out)
	}
	e.ok("vm", "start", "c1")
	if out := e.ok("vm", "exec", "c1", "--", "cat", "/root/c1-only"); out != "mine\n" {
		t.Errorf("c1 after stop and start: %q", out)
	}

	e.ok("vm", "run", "-d", "--cold", "--name", "c3", "--image", "bb")
	if got := vmStartedFrom(t, e, "c3"); got != "cold" {
		t.Errorf("--cold VM started from %q", got)
	}
	e.ok("vm", "delete", "-f", "c1", "c2", "c3")

	// A corrupt template: the VM boots cold and the template is discarded.
	state := filepath.Join(e.home, "cache", "templates", id, stateFile)
	if err := os.WriteFile(state, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok("vm", "run", "-d", "--name", "c4", "--image", "bb")
	if got := vmStartedFrom(t, e, "c4"); got != "cold" {
		t.Errorf("VM from a corrupt template started from %q, want cold", got)
	}
	if b, err := os.ReadFile(state); err == nil && string(b) == "garbage" {
		t.Errorf("the corrupt template was kept")
	}
	if !strings.Contains(e.daemonLog(), "discarding the template") {
		t.Errorf("the daemon log does not say why the VM booted cold")
	}
}

// TestTemplateClonesNetworked: clones of a template with a NIC each get
// their own MAC (set before the link is used), address and SSH host key
// (ssh checks the key banger pinned for each), and reach the network.
func TestTemplateClonesNetworked(t *testing.T) {
	testutil.RequireTool(t, "ssh", "openssh-client")
	testTemplateClonesNetworked(t, newNetEnv(t), 10)
}

// TestTemplateClonesNetworkedFirecracker: TestTemplateClonesNetworked on
// the Firecracker engine (through the test double): the template VM's NIC
// is on a throwaway tap, removed once the template is saved, and each
// clone's /snapshot/load maps it to the clone's own tap
// (network_overrides).
func TestTemplateClonesNetworkedFirecracker(t *testing.T) {
	testutil.RequireTool(t, "ssh", "openssh-client")
	n := newNetEnvAs(t, false, nil, netConfig{
		toml: "engine = \"firecracker\"\nfirecracker_bin = \"" + filepath.Join(binDir, "firecracker") + "\"\njailer = false\n",
		env:  []string{"BANGER_TEST_FIRECRACKER_DOUBLE=1"},
	})
	// Four clones: the ten of the QEMU test would add another minute to
	// the suite, and what is engine-specific (the tap override) shows in
	// any two.
	testTemplateClonesNetworked(t, n, 4)
	if links := nettest.MustIP(t, n.host, "-o", "link"); strings.Contains(links, network.TapPrefix+"t") {
		t.Errorf("a template's tap is left:\n%s", links)
	}
}

// testTemplateClonesNetworked starts count clones of one template, one at
// a time (start, check, stop: under TCG on two shared cores ten running
// guests would starve each other), only the template shared, and checks
// each has its own MAC, address, hostname, SSH host key, kernel random
// stream and machine-id, a clock within a second of the host's, reaches
// the network and answers ssh by name with the key banger pinned; a clone
// restarted keeps its machine-id.
func testTemplateClonesNetworked(t *testing.T, n *netEnv, count int) {
	home := t.TempDir()
	n.extra = append(n.extra, "HOME="+home)
	var names []string
	for i := 1; i <= count; i++ {
		names = append(names, fmt.Sprintf("n%d", i))
	}
	n.ok("vm", "run", "-d", "--name", "first", "--image", "bb")
	defer n.run(append([]string{"vm", "delete", "-f", "first"}, names...)...)
	id := waitTemplate(t, n.env)
	n.ok("vm", "delete", "-f", "first")
	cfg := strings.TrimSpace(n.ok("ssh-config"))
	seen := map[string]string{}
	machineIDs := map[string]string{}
	for _, vm := range names {
		n.ok("vm", "run", "-d", "--name", vm, "--image", "bb")
		if got := vmStartedFrom(t, n.env, vm); got != "template "+id {
			t.Errorf("%s started from %q, want template %s", vm, got, id)
		}
		var v struct{ IP string }
		json.Unmarshal([]byte(n.ok("vm", "show", vm, "--json")), &v)
		before := time.Now()
		out := n.ok("vm", "exec", vm, "--", "sh", "-c",
			"date +%s; hostname; cat /sys/class/net/eth0/address /proc/sys/kernel/random/uuid /etc/machine-id; ip -4 -o addr show eth0")
		after := time.Now()
		f := strings.SplitN(out, "\n", 6)
		if len(f) != 6 {
			t.Fatalf("%s identity output %q", vm, out)
		}
		clock, host, mac, uuid, mid, addr := f[0], f[1], f[2], f[3], f[4], f[5]
		if host != vm {
			t.Errorf("%s: hostname %q", vm, host)
		}
		if v.IP == "" || !strings.Contains(addr, " "+v.IP+"/") {
			t.Errorf("%s: guest addresses %q, banger says %q", vm, addr, v.IP)
		}
		// The guest's clock, read between before and after, is within a
		// second of the host's (date +%s truncates).
		if sec, err := strconv.ParseInt(clock, 10, 64); err != nil || sec < before.Unix()-1 || sec > after.Unix()+1 {
			t.Errorf("%s: guest clock %q, host %d..%d", vm, clock, before.Unix(), after.Unix())
		}
		if len(mid) != 32 {
			t.Errorf("%s: machine-id %q", vm, mid)
		}
		machineIDs[vm] = mid
		for what, val := range map[string]string{"MAC": mac, "address": v.IP, "random stream": uuid, "machine-id": mid} {
			if other, dup := seen[what+val]; dup {
				t.Errorf("%s and %s share the %s %s", other, vm, what, val)
			}
			seen[what+val] = vm
		}
		if got := n.fetch(vm, "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw") {
			t.Errorf("%s cannot reach the network: %q", vm, got)
		}
		// ssh verifies the host key banger pinned for this VM.
		var r result
		for range 20 {
			if r = n.ssh(home, cfg, vm+".vm", "hostname"); r.code == 0 {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if r.code != 0 || strings.TrimSpace(r.out) != vm {
			t.Errorf("ssh %s.vm: %+v", vm, r)
		}
		n.ok("vm", "stop", vm)
	}
	// Each clone's pinned host key is its own.
	kh, err := os.ReadFile(filepath.Join(n.home, "state", "ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, l := range strings.Split(string(kh), "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			if other, dup := keys[f[2]]; dup {
				t.Errorf("%s and %s have the same host key", other, f[0])
			}
			keys[f[2]] = f[0]
		}
	}
	for _, vm := range names {
		if !strings.Contains(string(kh), vm+".vm") {
			t.Errorf("no host key pinned for %s.vm:\n%s", vm, kh)
		}
	}
	// A restarted clone keeps its machine-id (it is on its disk).
	n.ok("vm", "start", names[0])
	if got := strings.TrimSpace(n.ok("vm", "exec", names[0], "--", "cat", "/etc/machine-id")); got != machineIDs[names[0]] {
		t.Errorf("%s's machine-id after stop and start: %q, was %q", names[0], got, machineIDs[names[0]])
	}
}
